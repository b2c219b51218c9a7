"""The skae command."""

import joblib
import numpy as np
import pytest

from skae.cli import main


def test_demo_prints_the_comparison_table(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for expected in (
        "expl. var",
        "mean L0",
        "KMeans ARI",
        "5-fold acc",
        "PCA(16)",
        "KSparse(128, k=16)",
    ):
        assert expected in out
    ksparse = next(line for line in out.splitlines() if line.startswith("KSparse"))
    explained_variance, mean_l0 = map(float, ksparse.split()[2:4])
    assert mean_l0 <= 16
    assert explained_variance > 0.85


def test_unknown_command_exits_with_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.fixture
def data_files(tmp_path):
    rng = np.random.RandomState(0)
    X = rng.randn(300, 9)
    np.save(tmp_path / "X.npy", X)
    np.savez(tmp_path / "X.npz", X=X)
    header = ",".join(f"f{i}" for i in range(9))
    np.savetxt(tmp_path / "X.csv", X, delimiter=",", header=header, comments="")
    return tmp_path, X


@pytest.mark.parametrize("suffix", ["npy", "npz", "csv"])
def test_fit_transform_info_round_trip(data_files, suffix, capsys):
    tmp, X = data_files
    model, codes = tmp / "model.joblib", tmp / "codes.npy"
    params = ["-p", "n_components=12", "-p", "k=3", "-p", "max_iter=3"]
    assert main(["fit", str(tmp / f"X.{suffix}"), *params, "-o", str(model)]) == 0
    assert main(["transform", str(model), str(tmp / "X.npy"), "-o", str(codes)]) == 0
    saved = joblib.load(model)
    np.testing.assert_array_equal(np.load(codes), saved.transform(X))
    assert (np.load(codes) != 0).sum(axis=1).max() <= 3
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "KSparseAutoencoder: 9 features -> 12 latents" in out
    assert "dead latents:" in out and "  k = 3" in out


def test_fit_other_models_with_literal_parameters(data_files):
    tmp, X = data_files
    model = tmp / "stacked.joblib"
    args = ["fit", str(tmp / "X.npy"), "--model", "stacked", "-o", str(model)]
    args += ["-p", "hidden_layer_sizes=(8, 4)", "-p", "sparsity=topk", "-p", "k=(4, 2)"]
    assert main([*args, "-p", "max_iter=2", "-p", "device=cpu"]) == 0
    assert joblib.load(model).transform(X).shape == (len(X), 4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "{tmp}/missing.npy", "-o", "{tmp}/m"], "no such file"),
        (["fit", "{tmp}/X.txt", "-o", "{tmp}/m"], "unknown file type .txt"),
        (["fit", "{tmp}/X.npy", "-p", "kk=3", "-o", "{tmp}/m"], "has no parameter kk"),
        (["fit", "{tmp}/X.npy", "-p", "k", "-o", "{tmp}/m"], "write NAME=VALUE"),
        (
            ["fit", "{tmp}/X.npy", "-p", "k=999", "-o", "{tmp}/m"],
            "k=999 must be at most",
        ),
        (
            ["transform", "{tmp}/X.npy", "{tmp}/X.npy", "-o", "{tmp}/c.npy"],
            "not a saved skae",
        ),
        (["info", "{tmp}/missing.joblib"], "no such file"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(data_files, args, message, capsys):
    tmp, _ = data_files
    (tmp / "X.txt").write_text("1,2\n")
    assert main([a.format(tmp=tmp) for a in args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("skae ")


def test_transform_rejects_data_of_another_width(data_files, capsys):
    tmp, _ = data_files
    model = tmp / "m.joblib"
    assert main(["fit", str(tmp / "X.npy"), "-p", "max_iter=1", "-o", str(model)]) == 0
    np.save(tmp / "narrow.npy", np.zeros((5, 4)))
    assert main(["transform", str(model), str(tmp / "narrow.npy"), "-o", "c.npy"]) == 1
    assert "X has 4 features" in capsys.readouterr().err


def test_transform_streams_chunks_with_progress(data_files, monkeypatch, capsys):
    import skae.cli

    tmp, X = data_files
    model, codes = tmp / "m.joblib", tmp / "codes.npy"
    assert main(["fit", str(tmp / "X.npy"), "-p", "max_iter=2", "-o", str(model)]) == 0
    monkeypatch.setattr(skae.cli, "TRANSFORM_CHUNK_BYTES", 1)  # 256-row chunks
    assert (
        main(["transform", str(model), str(tmp / "X.npy"), "-o", str(codes), "-v"]) == 0
    )
    np.testing.assert_array_equal(np.load(codes), joblib.load(model).transform(X))
    assert "300/300" in capsys.readouterr().err


def test_transform_failing_midway_leaves_no_codes_file(data_files, monkeypatch, capsys):
    import skae.cli

    tmp, X = data_files
    model, codes = tmp / "m.joblib", tmp / "codes.npy"
    assert main(["fit", str(tmp / "X.npy"), "-p", "max_iter=1", "-o", str(model)]) == 0
    bad = X.copy()
    bad[290, 4] = np.nan  # in the second 256-row chunk
    np.save(tmp / "bad.npy", bad)
    monkeypatch.setattr(skae.cli, "TRANSFORM_CHUNK_BYTES", 1)
    assert main(["transform", str(model), str(tmp / "bad.npy"), "-o", str(codes)]) == 1
    assert "NaN" in capsys.readouterr().err
    assert not codes.exists()


def test_transform_rejects_one_dimensional_data(data_files, capsys):
    tmp, _ = data_files
    model = tmp / "m.joblib"
    assert main(["fit", str(tmp / "X.npy"), "-p", "max_iter=1", "-o", str(model)]) == 0
    np.save(tmp / "flat.npy", np.zeros(9))
    assert main(["transform", str(model), str(tmp / "flat.npy"), "-o", "c.npy"]) == 1
    assert "1-D array" in capsys.readouterr().err


def test_transform_refuses_to_overwrite_its_input(data_files, capsys):
    tmp, X = data_files
    model = tmp / "m.joblib"
    assert main(["fit", str(tmp / "X.npy"), "-p", "max_iter=1", "-o", str(model)]) == 0
    data = str(tmp / "X.npy")
    assert main(["transform", str(model), data, "-o", data]) == 1
    assert "is the input" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(data), X)


def test_transform_adds_npy_like_np_save(data_files):
    tmp, _ = data_files
    model = tmp / "m.joblib"
    assert main(["fit", str(tmp / "X.npy"), "-p", "max_iter=1", "-o", str(model)]) == 0
    assert (
        main(["transform", str(model), str(tmp / "X.npy"), "-o", str(tmp / "c")]) == 0
    )
    assert np.load(tmp / "c.npy").shape == (300, 128)


def test_ctrl_c_during_transform_leaves_no_codes_file(data_files, monkeypatch):
    import skae.cli
    from skae import KSparseAutoencoder

    tmp, _ = data_files
    model, codes = tmp / "m.joblib", tmp / "codes.npy"
    assert main(["fit", str(tmp / "X.npy"), "-p", "max_iter=1", "-o", str(model)]) == 0
    monkeypatch.setattr(skae.cli, "TRANSFORM_CHUNK_BYTES", 1)
    calls = []
    original = KSparseAutoencoder.transform

    def interrupted(self, X):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, X)

    monkeypatch.setattr(KSparseAutoencoder, "transform", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["transform", str(model), str(tmp / "X.npy"), "-o", str(codes)])
    assert not codes.exists()
