"""The skae command."""

import os
import pathlib
import pickle
import re
import subprocess
import sys

import joblib
import numpy as np
import pandas as pd
import pytest

import skae
import skae.cli
from skae import KSparseAutoencoder
from skae.cli import main

# Small and seeded: a short fit that reconstructs better than the mean does.
FAST = [
    "-p",
    "n_components=12",
    "-p",
    "k=3",
    "-p",
    "max_iter=2",
    "-p",
    "random_state=0",
]


def test_demo_prints_the_comparison_table(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for expected in (
        "expl. var",
        "mean L0",
        "KMeans ARI",
        "3-fold acc",
        "PCA(16)",
        "KSparse(128, k=16)",
    ):
        assert expected in out
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    explained_variance, mean_l0 = map(float, rows["KSparse(128, k=16)"].split()[2:4])
    pca_explained_variance = float(rows["PCA(16)"].split()[1])
    assert mean_l0 <= 16
    # It says what it does as it goes, and where to go next.
    for name in ("raw pixels", "PCA(16)", "KSparse(128, k=16)"):
        assert f"  {name}: fit, cluster, cross-validate ... " in out
    assert out.rstrip().splitlines()[-1].startswith("next: fit your own data")
    # The README's claim: far above PCA with as many codes (0.932 vs 0.849).
    assert explained_variance > pca_explained_variance + 0.05


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
    pd.DataFrame(X, columns=header.split(",")).to_parquet(tmp_path / "X.parquet")
    return tmp_path, X


@pytest.fixture
def model_file(data_files):
    """A model saved by ``skae fit`` in the default (safe) format."""
    tmp, _ = data_files
    model = tmp / "m.skae"
    assert main(["fit", str(tmp / "X.npy"), *FAST, "-o", str(model)]) == 0
    return model


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("skae ") and "\n" not in err, err
    assert "Traceback" not in err
    return err


def folder_listing(folder) -> set[str]:
    return set(os.listdir(folder))


@pytest.mark.parametrize("suffix", ["npy", "npz", "csv", "parquet"])
def test_fit_transform_info_round_trip(data_files, suffix, capsys):
    tmp, X = data_files
    model, codes = tmp / "model.skae", tmp / "codes.npy"
    # A memmapped .npy holds out whole blocks for validation, too few here.
    early_stopping = suffix != "npy"
    params = ["-p", "n_components=12", "-p", "k=3", "-p", "max_iter=3"]
    params += ["-p", "random_state=0", "-p", f"early_stopping={early_stopping}"]
    assert main(["fit", str(tmp / f"X.{suffix}"), *params, "-o", str(model)]) == 0
    assert main(["transform", str(model), str(tmp / "X.npy"), "-o", str(codes)]) == 0
    saved = skae.load(model)
    np.testing.assert_array_equal(np.load(codes), saved.transform(X))
    assert (np.load(codes) != 0).sum(axis=1).max() <= 3
    # Every file type reads the same 300 x 9 numbers: the same model.
    same = KSparseAutoencoder(12, k=3, max_iter=3, random_state=0)
    same.set_params(early_stopping=early_stopping).fit(X)
    np.testing.assert_array_equal(saved.components_, same.components_)
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "KSparseAutoencoder: 9 features -> 12 latents" in out
    assert "epochs: 3\n" in out
    first, last = saved.loss_curve_[0], saved.loss_curve_[-1]
    assert f"training loss: first {first:.4g}, last {last:.4g}" in out
    if early_stopping:
        best = saved.best_validation_score_
        assert f"best validation explained variance: {best:.4f}" in out
    else:
        assert "best validation" not in out
    l0 = saved.activation_frequency_.sum()
    assert f"mean L0 (active latents per training row): {l0:.2f}" in out
    dead = int((saved.activation_frequency_ == 0).sum())
    assert f"dead latents: {dead} of 12" in out and "  k = 3" in out


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("ksparse", ["k=3"]),
        ("l1", ["n_components=12", "alpha=0.1"]),
        ("l2", ["n_components=12", "alpha=0.1"]),
        ("kl", ["n_components=12", "sparsity_target=0.1"]),
        ("jumprelu", ["n_components=12", "sparsity_weight=0.01"]),
        ("conv", ["image_shape=(3, 3)", "kernel_size=3", "n_components=4", "k=1"]),
        ("stacked", ["hidden_layer_sizes=(12, 6)", "sparsity=topk", "k=(4, 2)"]),
    ],
)
def test_fit_every_model_the_command_offers(data_files, name, params, capsys):
    tmp, _ = data_files
    model = tmp / f"{name}.skae"
    args = ["fit", str(tmp / "X.npy"), "--model", name, "-o", str(model)]
    args += [f"-p{param}" for param in [*params, "max_iter=3", "random_state=0"]]
    assert main(args) == 0
    saved = skae.load(model)
    assert type(saved).__name__ == skae.cli.MODELS[name]
    assert saved.n_iter_ == 3
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    assert capsys.readouterr().out.startswith(f"{skae.cli.MODELS[name]}: 9 features")


def test_python_dash_m_skae_is_the_command(model_file, capsys, python_env):
    assert main(["info", str(model_file)]) == 0
    expected = capsys.readouterr().out
    ran = subprocess.run(
        [sys.executable, "-m", "skae", "info", str(model_file)],
        capture_output=True,
        text=True,
        check=True,
        env=python_env,
    )
    assert ran.stdout == expected


def test_fit_saves_the_safe_format_whatever_the_name(data_files):
    tmp, X = data_files
    model = tmp / "model"  # no suffix: still skae.save's format, not a pickle
    assert main(["fit", str(tmp / "X.npy"), *FAST, "-o", str(model)]) == 0
    assert skae.load(model).transform(X).shape == (len(X), 12)


def test_fit_to_joblib_loads_only_with_allow_pickle(data_files, capsys):
    tmp, X = data_files
    model, codes = tmp / "m.joblib", tmp / "codes.npy"
    assert main(["fit", str(tmp / "X.npy"), *FAST, "-o", str(model)]) == 0
    saved = joblib.load(model)
    assert isinstance(saved, KSparseAutoencoder)
    capsys.readouterr()
    assert main(["transform", str(model), str(tmp / "X.npy"), "-o", str(codes)]) == 1
    assert "--allow-pickle" in one_line_error(capsys)
    assert not codes.exists()
    args = ["transform", str(model), str(tmp / "X.npy"), "-o", str(codes)]
    assert main([*args, "--allow-pickle"]) == 0
    np.testing.assert_array_equal(np.load(codes), saved.transform(X))
    assert main(["info", str(model), "--allow-pickle"]) == 0
    assert "KSparseAutoencoder: 9 features" in capsys.readouterr().out


def test_fit_other_models_with_literal_parameters(data_files):
    tmp, X = data_files
    model = tmp / "stacked.skae"
    args = ["fit", str(tmp / "X.npy"), "--model", "stacked", "-o", str(model)]
    args += ["-p", "hidden_layer_sizes=(8, 4)", "-p", "sparsity=topk", "-p", "k=(4, 2)"]
    assert main([*args, "-p", "max_iter=2", "-p", "device=cpu"]) == 0
    assert skae.load(model).transform(X).shape == (len(X), 4)


class _Evil:
    """Unpickling this creates ``marker``: what a crafted model file could do."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["evil.joblib", "evil.skae"])
@pytest.mark.parametrize("command", ["transform", "info"])
def test_a_pickle_never_loads_without_allow_pickle(data_files, name, command, capsys):
    tmp, _ = data_files
    marker, evil = tmp / "MARKER", tmp / name
    evil.write_bytes(pickle.dumps(_Evil(marker)))
    args = {
        "transform": ["transform", str(evil), str(tmp / "X.npy"), "-o", "c.npy"],
        "info": ["info", str(evil)],
    }[command]
    assert main(args) == 1
    err = one_line_error(capsys)
    assert "not a skae model file" in err and "--allow-pickle" in err
    assert "runs any code" in err
    assert not marker.exists()
    # The file does run code when unpickled, and even then only a skae
    # model is accepted.
    assert main([*args, "--allow-pickle"]) == 1
    assert marker.exists()
    assert "not one of skae's autoencoders" in one_line_error(capsys)


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
            "is not a skae model file",
        ),
        (
            ["transform", "{tmp}/X.npy", "{tmp}/X.npy", "-o", "{tmp}/c.txt"],
            "must end in .npy, .npz, .csv, .parquet",
        ),
        (["info", "{tmp}/missing.skae"], "no such file"),
        (["info", "{tmp}/X.npy", "--allow-pickle"], "not a joblib file that loads"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(data_files, args, message, capsys):
    tmp, _ = data_files
    (tmp / "X.txt").write_text("1,2\n")
    assert main([a.format(tmp=tmp) for a in args]) == 1
    assert message in one_line_error(capsys)


@pytest.mark.parametrize(
    "error",
    [
        skae.TrainingDivergedError("the loss became NaN at epoch 2\nmore detail"),
        MemoryError("Unable to allocate 12 TiB"),
        TypeError("X is a str"),
        OSError(28, "No space left on device"),
    ],
)
def test_fit_failures_are_one_line(data_files, monkeypatch, error, capsys):
    tmp, _ = data_files

    def failing_fit(self, X, y=None):
        raise error

    monkeypatch.setattr(KSparseAutoencoder, "fit", failing_fit)
    assert main(["fit", str(tmp / "X.npy"), "-o", str(tmp / "m.skae")]) == 1
    assert str(error).splitlines()[0] in one_line_error(capsys)
    assert not (tmp / "m.skae").exists()


def test_saving_failure_is_one_line(data_files, monkeypatch, capsys):
    tmp, _ = data_files

    def full_disk(estimator, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(skae, "save", full_disk)
    args = ["fit", str(tmp / "X.npy"), *FAST, "-o", str(tmp / "m.skae")]
    assert main(args) == 1
    err = one_line_error(capsys)
    assert "cannot save" in err and "No space left on device" in err


def test_huge_model_is_refused_on_one_line(data_files, python_env):
    tmp, _ = data_files
    huge = ["fit", str(tmp / "X.npy"), "-p", "n_components=1000000000"]
    result = subprocess.run(
        [sys.executable, "-m", "skae", *huge, "-o", str(tmp / "m.skae")],
        capture_output=True,
        text=True,
        timeout=120,
        env=python_env,
    )
    assert result.returncode == 1
    err = result.stderr.strip()
    assert "Traceback" not in err and "\n" not in err
    assert err.startswith("skae fit: error:") and "n_components" in err
    assert not (tmp / "m.skae").exists()


def test_transform_rejects_data_of_another_width(model_file, capsys):
    tmp = model_file.parent
    codes = tmp / "c.npy"
    codes.write_bytes(b"previous codes")
    np.save(tmp / "narrow.npy", np.zeros((5, 4)))
    before = folder_listing(tmp)
    args = ["transform", str(model_file), str(tmp / "narrow.npy"), "-o", str(codes)]
    assert main([*args, "--overwrite"]) == 1
    assert "X has 4 features" in one_line_error(capsys)
    assert codes.read_bytes() == b"previous codes"
    assert folder_listing(tmp) == before  # no leftover temporary


def test_transform_streams_chunks_with_progress(model_file, monkeypatch, capsys):
    tmp = model_file.parent
    X, codes = np.load(tmp / "X.npy"), tmp / "codes.npy"
    monkeypatch.setattr(skae.cli, "TRANSFORM_CHUNK_BYTES", 1)  # 256-row chunks
    args = ["transform", str(model_file), str(tmp / "X.npy"), "-o", str(codes), "-v"]
    assert main(args) == 0
    np.testing.assert_array_equal(np.load(codes), skae.load(model_file).transform(X))
    err = capsys.readouterr().err
    assert "transform: 100%" in err and "300/300" in err and "row/s]" in err


def test_transform_failing_midway_leaves_no_codes_file(model_file, monkeypatch, capsys):
    tmp = model_file.parent
    codes = tmp / "codes.npy"
    bad = np.load(tmp / "X.npy")
    bad[290, 4] = np.nan  # in the second 256-row chunk
    np.save(tmp / "bad.npy", bad)
    before = folder_listing(tmp)
    monkeypatch.setattr(skae.cli, "TRANSFORM_CHUNK_BYTES", 1)
    args = ["transform", str(model_file), str(tmp / "bad.npy"), "-o", str(codes)]
    assert main(args) == 1
    assert "NaN" in one_line_error(capsys)
    assert folder_listing(tmp) == before


def test_transform_rejects_one_dimensional_data(model_file, capsys):
    tmp = model_file.parent
    np.save(tmp / "flat.npy", np.zeros(9))
    args = ["transform", str(model_file), str(tmp / "flat.npy"), "-o"]
    assert main([*args, str(tmp / "c.npy")]) == 1
    assert "1-D array" in one_line_error(capsys)
    assert not (tmp / "c.npy").exists()


def test_transform_refuses_to_overwrite_its_input(model_file, capsys):
    tmp = model_file.parent
    data = tmp / "X.npy"
    before = data.read_bytes()
    assert main(["transform", str(model_file), str(data), "-o", str(data)]) == 1
    assert one_line_error(capsys).endswith(
        f"the output {data} is the input {data}: it would be overwritten while "
        "it is read; choose another name"
    )
    assert data.read_bytes() == before


def _hard_link(target, link):
    os.link(target, link)


def _symlink(target, link):
    os.symlink(target, link)


@pytest.mark.parametrize("make_link", [_hard_link, _symlink])
@pytest.mark.parametrize("which", ["data", "model"])
def test_transform_never_overwrites_an_input_through_a_link(
    model_file, make_link, which, capsys
):
    tmp = model_file.parent
    data = tmp / "B.npy"
    np.save(data, np.load(tmp / "X.npy"))
    target = {"data": data, "model": model_file}[which]
    before = target.read_bytes()
    make_link(target, tmp / "Z.npy")
    args = ["transform", str(model_file), str(data), "-o", str(tmp / "Z.npy")]
    assert main([*args, "--overwrite"]) == 1
    assert "is the input" in one_line_error(capsys)
    assert target.read_bytes() == before


@pytest.mark.parametrize("make_link", [None, _hard_link, _symlink])
def test_fit_never_overwrites_its_data(data_files, monkeypatch, make_link, capsys):
    tmp, _ = data_files
    data = tmp / "X.npy"
    before = data.read_bytes()
    output = data
    if make_link is not None:
        output = tmp / "m.joblib"
        make_link(data, output)
    monkeypatch.setattr(skae.cli, "load_data", _fails("the data was loaded"))
    args = ["fit", str(data), "-o", str(output), "--overwrite"]
    assert main(args) == 1
    assert one_line_error(capsys).endswith(
        f"the output {output} is the input {data}: it would be overwritten while "
        "it is read; choose another name"
    )
    assert data.read_bytes() == before


def test_transform_replaces_its_output_without_writing_through_links(
    model_file, capsys
):
    tmp = model_file.parent
    codes, other = tmp / "codes.npy", tmp / "other.npy"
    other.write_bytes(b"another file")
    os.link(other, codes)
    args = ["transform", str(model_file), str(tmp / "X.npy"), "-o", str(codes)]
    assert main([*args, "--overwrite"]) == 0
    assert np.load(codes).shape == (300, 12)
    assert other.read_bytes() == b"another file"


def _fails(message):
    def fail(*args, **kwargs):
        raise AssertionError(message)

    return fail


def test_existing_outputs_are_replaced_only_with_overwrite(model_file, capsys):
    tmp = model_file.parent
    codes = tmp / "codes.npy"
    codes.write_bytes(b"previous codes")
    transform = ["transform", str(model_file), str(tmp / "X.npy"), "-o", str(codes)]
    assert main(transform) == 1
    err = one_line_error(capsys)
    assert "exists" in err and "--overwrite" in err
    assert codes.read_bytes() == b"previous codes"
    assert main([*transform, "--overwrite"]) == 0
    assert np.load(codes).shape == (300, 12)

    model_before = model_file.read_bytes()
    fit = ["fit", str(tmp / "X.npy"), *FAST, "-p", "max_iter=3", "-o", str(model_file)]
    assert main(fit) == 1
    assert "--overwrite" in one_line_error(capsys)
    assert model_file.read_bytes() == model_before
    assert main([*fit, "--overwrite"]) == 0
    assert skae.load(model_file).n_iter_ == 3


def test_fit_refuses_to_replace_a_file_that_is_not_a_model(
    data_files, monkeypatch, capsys
):
    tmp, _ = data_files
    notes = tmp / "notes.skae"
    notes.write_text("not a model")
    monkeypatch.setattr(KSparseAutoencoder, "fit", _fails("trained"))
    assert main(["fit", str(tmp / "X.npy"), "-o", str(notes), "--overwrite"]) == 1
    assert one_line_error(capsys).endswith(
        f"{notes} exists and is not a skae model file, which skae fit never "
        "replaces; delete it or choose another name"
    )
    assert notes.read_text() == "not a model"


def _read_only_folder(tmp):
    folder = tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root writes anywhere
        pytest.skip("this user can write in a read-only folder")
    return folder


@pytest.mark.parametrize("folder", ["missing", "a file", "read-only"])
def test_fit_checks_its_output_folder_before_any_work(
    data_files, monkeypatch, folder, capsys
):
    tmp, _ = data_files
    parent = {
        "missing": lambda: tmp / "missing",
        "a file": lambda: tmp / "X.csv",
        "read-only": lambda: _read_only_folder(tmp),
    }[folder]()
    monkeypatch.setattr(skae.cli, "load_data", _fails("the data was loaded"))
    monkeypatch.setattr(KSparseAutoencoder, "fit", _fails("trained"))
    args = ["fit", str(tmp / "X.npy"), "-o", str(parent / "m.skae")]
    assert main(args) == 1
    err = one_line_error(capsys)
    assert f"error: --output='{parent / 'm.skae'}' cannot be written" in err
    assert str(parent) in err


def test_transform_checks_its_output_before_loading_anything(
    model_file, monkeypatch, capsys
):
    tmp = model_file.parent
    monkeypatch.setattr(skae, "load", _fails("the model was loaded"))
    monkeypatch.setattr(skae.cli, "load_data", _fails("the data was loaded"))
    codes = tmp / "missing" / "codes.npy"
    assert main(["transform", str(model_file), str(tmp / "X.npy"), "-o", str(codes)])
    assert "cannot be written" in one_line_error(capsys)


def test_transform_output_format_comes_from_its_extension(model_file, capsys):
    tmp = model_file.parent
    before = folder_listing(tmp)
    args = ["transform", str(model_file), str(tmp / "X.npy"), "-o"]
    for name in ("codes.txt", "codes", "codes.npy.bak"):
        assert main([*args, str(tmp / name)]) == 1
        assert "must end in .npy, .npz, .csv, .parquet" in one_line_error(capsys)
    assert folder_listing(tmp) == before


def test_ctrl_c_during_transform_leaves_no_codes_file(model_file, monkeypatch):
    tmp = model_file.parent
    codes = tmp / "codes.npy"
    codes.write_bytes(b"previous codes")
    before = folder_listing(tmp)
    monkeypatch.setattr(skae.cli, "TRANSFORM_CHUNK_BYTES", 1)
    calls = []
    original = KSparseAutoencoder.transform

    def interrupted(self, X):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, X)

    monkeypatch.setattr(KSparseAutoencoder, "transform", interrupted)
    args = ["transform", str(model_file), str(tmp / "X.npy"), "-o", str(codes)]
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--overwrite"])
    assert len(calls) == 2
    assert codes.read_bytes() == b"previous codes"
    assert folder_listing(tmp) == before


def test_info_names_what_it_cannot_describe(tmp_path, capsys):
    unfitted, detector = tmp_path / "unfitted.skae", tmp_path / "detector.skae"
    skae.save(KSparseAutoencoder(8, k=2), unfitted)
    skae.save(skae.SparseAutoencoderOutlierDetector(), detector)
    assert main(["info", str(unfitted)]) == 1
    assert "holds an unfitted KSparseAutoencoder" in one_line_error(capsys)
    assert main(["info", str(detector)]) == 1
    assert one_line_error(capsys).endswith(
        f"{detector} holds a SparseAutoencoderOutlierDetector, not one of skae's "
        "autoencoders (KSparseAutoencoder, ...)"
    )


def test_the_command_offers_every_estimator():
    from skae._base import BaseSparseAutoencoder

    assert set(skae.cli.MODELS.values()) == set(BaseSparseAutoencoder._skae_estimators)


# ------------------------------------------------- output formats and inputs


@pytest.mark.parametrize("sparse_output", [False, True])
@pytest.mark.parametrize("suffix", ["npy", "npz", "csv", "parquet"])
def test_transform_writes_the_format_its_extension_names(
    data_files, suffix, sparse_output, capsys
):
    tmp, X = data_files
    model = tmp / "m.skae"
    fit = ["fit", str(tmp / "X.npy"), *FAST, "-p", f"sparse_output={sparse_output}"]
    assert main([*fit, "-o", str(model)]) == 0
    saved = skae.load(model)
    expected = saved.transform(X)
    expected = expected.toarray() if sparse_output else expected
    codes = tmp / f"codes.{suffix}"
    assert main(["transform", str(model), str(tmp / "X.npy"), "-o", str(codes)]) == 0
    names = list(saved.get_feature_names_out())
    if suffix == "npy":
        written = np.load(codes)
    elif suffix == "npz":
        import scipy.sparse

        written = scipy.sparse.load_npz(codes)
        assert scipy.sparse.issparse(written) and written.format == "csr"
        assert written.nnz == np.count_nonzero(expected)
        written = written.toarray()
    elif suffix == "csv":
        frame = pd.read_csv(codes)
        assert list(frame.columns) == names
        written = frame.to_numpy(dtype=expected.dtype)
    else:
        frame = pd.read_parquet(codes)
        assert list(frame.columns) == names
        written = frame.to_numpy()
    np.testing.assert_array_equal(written, expected)
    assert f"codes 300 x 12 saved to {codes}" in capsys.readouterr().out


def test_a_pandas_csv_keeps_its_column_names_and_drops_its_index(data_files, capsys):
    tmp, X = data_files
    names = [f"pixel{i}" for i in range(9)]
    pd.DataFrame(X, columns=names).to_csv(tmp / "frame.csv")  # with its index
    model = tmp / "m.skae"
    assert main(["fit", str(tmp / "frame.csv"), *FAST, "-o", str(model)]) == 0
    assert "on 300 x 9" in capsys.readouterr().out
    saved = skae.load(model)
    assert list(saved.feature_names_in_) == names
    same = KSparseAutoencoder(12, k=3, max_iter=2, random_state=0).fit(X)
    np.testing.assert_allclose(saved.components_, same.components_, rtol=1e-6)


def test_a_csv_with_text_columns_is_a_one_line_error(data_files, capsys):
    tmp, X = data_files
    frame = pd.DataFrame(X[:, :3], columns=["a", "b", "c"]).assign(label="x")
    frame.to_csv(tmp / "text.csv", index=False)
    assert main(["fit", str(tmp / "text.csv"), "-o", str(tmp / "m.skae")]) == 1
    assert "columns that are not numbers: label" in one_line_error(capsys)


# ------------------------------------------------------------ the command


def test_version_is_printed_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"skae {skae.__version__}"


def test_help_lists_models_and_formats_without_importing_torch(python_env):
    code = (
        "import sys, contextlib, io\n"
        "from skae.cli import main\n"
        "for args in (['--help'], ['fit', '--help'], ['transform', '--help']):\n"
        "    with contextlib.suppress(SystemExit):\n"
        "        main(args)\n"
        "print('torch' in sys.modules, 'sklearn' in sys.modules)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=python_env,
    )
    assert ran.stdout.splitlines()[-1] == "False False"
    help_text = " ".join(ran.stdout.split())
    for model, name in skae.cli.MODELS.items():
        assert f"{model} ({name})" in help_text
    for formats in (".npy (memory-mapped", ".csv", ".parquet", ".npz: a scipy"):
        assert formats in help_text
    assert "--version" in help_text


def test_a_closed_pipe_ends_quietly(model_file, python_env):
    process = subprocess.Popen(
        [sys.executable, "-m", "skae", "info", str(model_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=python_env,
    )
    process.stdout.close()  # the reader is gone before the first line
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.filterwarnings("always::sklearn.exceptions.ConvergenceWarning")
def test_warnings_are_one_line_each(data_files, capsys):
    tmp, _ = data_files
    args = ["fit", str(tmp / "X.npy"), *FAST, "-p", "learning_rate_schedule=constant"]
    assert main([*args, "-o", str(tmp / "m.skae")]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("skae fit: warning: ") and "\n" not in err, err
    assert "ConvergenceWarning" not in err and ".py" not in err
    assert "max_iter=2" in err


def test_watch_prints_the_step_figures_and_tensorboard_writes_them(data_files, capsys):
    tmp, _ = data_files
    args = ["fit", str(tmp / "X.npy"), *FAST, "-p", "batch_size=64"]
    runs = tmp / "runs"
    assert (
        main(
            [
                *args,
                "--watch",
                "3",
                "--tensorboard",
                str(runs),
                "-o",
                str(tmp / "m.skae"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err.splitlines()
    line = (
        r"step (\d+) \(epoch [12]\): loss [\d.]+, L0 [\d.]+, FVU 0\.\d{4}, dead 0\.00%"
    )
    steps = [int(re.fullmatch(line, text).group(1)) for text in err]
    assert steps == [3, 6, 9, 10]  # two epochs of five batches of 64
    assert [p.name for p in runs.iterdir()] == ["fit-1"]
    assert any(
        f.name.startswith("events.out.tfevents") for f in (runs / "fit-1").iterdir()
    )


@pytest.mark.parametrize("steps", ["0", "-2", "ten"])
def test_watch_needs_a_whole_number_of_steps(data_files, steps, capsys):
    tmp, _ = data_files
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(tmp / "X.npy"), "--watch", steps, "-o", str(tmp / "m.skae")])
    assert exc.value.code == 2
    assert "whole number of steps >= 1" in capsys.readouterr().err


def test_tensorboard_missing_is_a_one_line_error_before_loading(
    data_files, monkeypatch, capsys
):
    tmp, _ = data_files
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setattr(skae.cli, "load_data", _fails("the data were read"))
    args = ["fit", str(tmp / "X.npy"), "--tensorboard", str(tmp / "runs")]
    assert main([*args, "-o", str(tmp / "m.skae")]) == 1
    assert "pip install tensorboard" in one_line_error(capsys)


# ------------------------------------------------------ the files it reads


def test_an_npz_with_several_arrays_is_a_one_line_error(data_files, capsys):
    tmp, X = data_files
    np.savez(tmp / "two.npz", X=X, y=X[:, 0])
    assert main(["fit", str(tmp / "two.npz"), "-o", str(tmp / "m.skae")]) == 1
    assert "holds 2 arrays (X, y); save exactly one" in one_line_error(capsys)
    assert not (tmp / "m.skae").exists()


def test_a_csv_without_a_header_is_all_numbers(data_files, capsys):
    tmp, X = data_files
    np.savetxt(tmp / "bare.csv", X, delimiter=",", fmt="%.17g")
    model = tmp / "m.skae"
    assert main(["fit", str(tmp / "bare.csv"), *FAST, "-o", str(model)]) == 0
    assert "on 300 x 9" in capsys.readouterr().out
    same = KSparseAutoencoder(12, k=3, max_iter=2, random_state=0).fit(X)
    np.testing.assert_array_equal(skae.load(model).components_, same.components_)


def test_without_pandas_a_csv_still_loads_and_parquet_says_what_to_install(
    data_files, monkeypatch, capsys
):
    tmp, X = data_files
    names = [f"pixel{i}" for i in range(9)]
    pd.DataFrame(X, columns=names).to_csv(tmp / "frame.csv")  # with its index
    monkeypatch.setitem(sys.modules, "pandas", None)
    same = KSparseAutoencoder(12, k=3, max_iter=2, random_state=0).fit(X)
    for csv in ("X.csv", "frame.csv"):  # a header, then a header and an index
        model = tmp / f"{csv}.skae"
        assert main(["fit", str(tmp / csv), *FAST, "-o", str(model)]) == 0
        assert "on 300 x 9" in capsys.readouterr().out
        saved = skae.load(model)
        np.testing.assert_allclose(saved.components_, same.components_, rtol=1e-6)
    assert main(["fit", str(tmp / "X.parquet"), "-o", str(tmp / "p.skae")]) == 1
    assert (
        ".parquet files need pandas pyarrow: pip install pandas pyarrow"
        in one_line_error(capsys)
    )


def test_parquet_output_without_an_engine_says_what_to_install(
    model_file, monkeypatch, capsys
):
    tmp = model_file.parent
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    codes = tmp / "codes.parquet"
    args = ["transform", str(model_file), str(tmp / "X.npy"), "-o", str(codes)]
    assert main(args) == 1
    assert one_line_error(capsys).endswith(
        "error: .parquet files need pyarrow: pip install pyarrow"
    )
    assert not codes.exists()
    monkeypatch.setitem(sys.modules, "pandas", None)
    assert main(args) == 1
    assert one_line_error(capsys).endswith(
        "error: .parquet files need pandas pyarrow: pip install pandas pyarrow"
    )
    assert not codes.exists()


def test_transform_of_no_rows_is_a_one_line_error_and_writes_nothing(
    model_file, capsys
):
    tmp = model_file.parent
    np.save(tmp / "none.npy", np.zeros((0, 9)))
    codes = tmp / "codes.npy"
    assert main(["transform", str(model_file), str(tmp / "none.npy"), "-o", str(codes)])
    assert "Found array with 0 sample(s)" in one_line_error(capsys)
    assert not codes.exists()


def test_info_of_a_model_without_a_loss_curve_says_the_rest(model_file, capsys):
    model = skae.load(model_file)
    model.loss_curve_ = []  # a fit stopped before its first epoch ended
    skae.save(model, model_file)
    capsys.readouterr()
    assert main(["info", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "training loss" not in out
    assert "epochs: 2\n" in out and "dead latents:" in out


@pytest.mark.parametrize("pandas", [True, False])
def test_one_row_of_csv_is_one_sample_with_or_without_a_header(
    model_file, monkeypatch, pandas, capsys
):
    tmp = model_file.parent
    X = np.load(tmp / "X.npy")[:1]
    np.savetxt(tmp / "bare.csv", X, delimiter=",", fmt="%.17g")
    header = ",".join(f"f{i}" for i in range(9))
    np.savetxt(tmp / "named.csv", X, delimiter=",", fmt="%.17g", header=header)
    if not pandas:
        monkeypatch.setitem(sys.modules, "pandas", None)
    expected = skae.load(model_file).transform(X)
    for csv in ("bare.csv", "named.csv"):
        codes = tmp / f"{csv}.npy"
        args = ["transform", str(model_file), str(tmp / csv), "-o", str(codes)]
        assert main(args) == 0, capsys.readouterr().err
        np.testing.assert_array_equal(np.load(codes), expected)


@pytest.mark.parametrize("pandas", [True, False])
def test_an_r_style_csv_drops_its_quoted_row_names(data_files, monkeypatch, pandas):
    tmp, X = data_files
    # R's write.csv: a quoted empty name over the quoted row names.
    lines = ['"",' + ",".join(f'"f{i}"' for i in range(9))]
    lines += [
        f'"{i + 1}",' + ",".join(map(repr, row)) for i, row in enumerate(X.tolist())
    ]
    (tmp / "r.csv").write_text("\n".join(lines) + "\n")
    if not pandas:
        monkeypatch.setitem(sys.modules, "pandas", None)
    model = tmp / "m.skae"
    assert main(["fit", str(tmp / "r.csv"), *FAST, "-o", str(model)]) == 0
    same = KSparseAutoencoder(12, k=3, max_iter=2, random_state=0).fit(X)
    np.testing.assert_array_equal(skae.load(model).components_, same.components_)


def test_text_columns_are_named_five_at_most(data_files, capsys):
    tmp, X = data_files
    frame = pd.DataFrame(X[:, :2], columns=["a", "b"])
    for name in "tuvwxyz":
        frame[name] = "text"
    frame.to_csv(tmp / "text.csv", index=False)
    assert main(["fit", str(tmp / "text.csv"), "-o", str(tmp / "m.skae")]) == 1
    assert one_line_error(capsys).endswith(
        "columns that are not numbers: t, u, v, w, x"
    )


def test_codes_of_float32_data_are_float32_and_written_compactly(model_file, capsys):
    tmp = model_file.parent
    X = np.load(tmp / "X.npy").astype(np.float32)
    np.save(tmp / "X32.npy", X)
    expected = skae.load(model_file).transform(X)
    assert expected.dtype == np.float32
    for suffix in ("npy", "csv"):
        codes = tmp / f"codes.{suffix}"
        args = ["transform", str(model_file), str(tmp / "X32.npy"), "-o", str(codes)]
        assert main(args) == 0
    written = np.load(tmp / "codes.npy")
    assert written.dtype == np.float32
    np.testing.assert_array_equal(written, expected)
    # Nine significant digits read a float32 back exactly; no more are written.
    text = (tmp / "codes.csv").read_text().splitlines()[1:]
    numbers = [cell for line in text for cell in line.split(",")]
    mantissas = [
        n.split("e")[0].lstrip("-").replace(".", "").lstrip("0") for n in numbers
    ]
    assert max(map(len, mantissas)) <= 9
    back = np.loadtxt(tmp / "codes.csv", delimiter=",", skiprows=1, dtype=np.float32)
    np.testing.assert_array_equal(back, expected)


@pytest.mark.parametrize("suffix", ["npy", "csv"])
def test_codes_of_three_chunks_land_in_their_rows(
    model_file, monkeypatch, suffix, capsys
):
    tmp = model_file.parent
    X = np.random.RandomState(1).randn(700, 9)  # 256 + 256 + 188 rows
    np.save(tmp / "X700.npy", X)
    monkeypatch.setattr(skae.cli, "TRANSFORM_CHUNK_BYTES", 1)  # 256-row chunks
    codes = tmp / f"codes.{suffix}"
    args = ["transform", str(model_file), str(tmp / "X700.npy"), "-o", str(codes)]
    assert main(args) == 0
    assert f"codes 700 x 12 saved to {codes}" in capsys.readouterr().out
    if suffix == "npy":
        written = np.load(codes)
    else:
        written = np.loadtxt(codes, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(written, skae.load(model_file).transform(X))


def test_watch_lines_give_the_dead_share_in_percent(capsys):
    from skae.monitor import StepMetrics

    skae.cli._print_metrics(StepMetrics(12, 2, 768, 0.5, 3.0, 0.25, 0.125))
    assert capsys.readouterr().err == (
        "step 12 (epoch 2): loss 0.5, L0 3, FVU 0.2500, dead 12.50%\n"
    )


def test_watch_every_step_is_allowed(data_files, capsys):
    tmp, _ = data_files
    args = ["fit", str(tmp / "X.npy"), *FAST, "-p", "batch_size=150"]
    assert main([*args, "--watch", "1", "-o", str(tmp / "m.skae")]) == 0
    assert len(capsys.readouterr().err.splitlines()) == 4  # 2 epochs of 2 steps


def test_an_npy_is_read_from_disk_as_it_is_needed(data_files):
    tmp, X = data_files
    loaded = skae.cli.load_data(tmp / "X.npy")
    assert isinstance(loaded, np.memmap) and loaded.mode == "r"
    np.testing.assert_array_equal(loaded, X)


@pytest.mark.parametrize(("name", "shown"), [("X.txt", ".txt"), ("X", "(none)")])
def test_an_unknown_file_type_is_named_with_the_types_read(
    data_files, name, shown, capsys
):
    tmp, _ = data_files
    (tmp / name).write_text("1,2\n")
    assert main(["fit", str(tmp / name), "-o", str(tmp / "m.skae")]) == 1
    assert one_line_error(capsys).endswith(
        f"{tmp / name}: unknown file type {shown}; use .npy, .npz, .csv or .parquet"
    )


def test_a_parameter_value_may_hold_an_equals_sign():
    params = skae.cli._parse_params(["checkpoint_path=runs/lr=1e-3", "k=4"])
    assert params == {"checkpoint_path": "runs/lr=1e-3", "k": 4}


def test_tensorboard_alone_prints_no_step_lines(data_files, capsys):
    tmp, _ = data_files
    args = ["fit", str(tmp / "X.npy"), *FAST, "--tensorboard", str(tmp / "runs")]
    assert main([*args, "-o", str(tmp / "m.skae")]) == 0
    assert "step " not in capsys.readouterr().err
    assert [p.name for p in (tmp / "runs").iterdir()] == ["fit-1"]


def test_info_counts_the_dead_latents_and_lists_the_parameters(model_file, capsys):
    model = skae.load(model_file)
    frequency = np.full(12, 0.25)
    frequency[[1, 5, 7]] = 0.0
    frequency[2] = 1.0  # fires on every row: alive
    model.activation_frequency_ = frequency
    skae.save(model, model_file)
    capsys.readouterr()
    assert main(["info", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "dead latents: 3 of 12\nparameters:\n  aux_k = " in out


def test_every_unknown_parameter_is_named(data_files, capsys):
    tmp, _ = data_files
    args = ["fit", str(tmp / "X.npy"), "-p", "zz=1", "-p", "kk=3", "-p", "k=2"]
    assert main([*args, "-o", str(tmp / "m.skae")]) == 1
    assert one_line_error(capsys).endswith(
        "KSparseAutoencoder has no parameter kk, zz; see help(skae.KSparseAutoencoder)"
    )


@pytest.mark.parametrize(("epochs", "said"), [(1, "1 epoch;"), (2, "2 epochs;")])
def test_fit_says_its_epochs_and_saves_a_quiet_model(data_files, epochs, said, capsys):
    tmp, _ = data_files
    model = tmp / "m.skae"
    args = ["fit", str(tmp / "X.npy"), *FAST, "-p", f"max_iter={epochs}", "-v"]
    assert main([*args, "-o", str(model)]) == 0
    assert f"on 300 x 9 in {said} saved to {model}" in capsys.readouterr().out
    # -v shows this fit's progress; the saved model is as quiet as the default.
    assert skae.load(model).verbose == 0


@pytest.mark.parametrize("command", ["fit", "transform", "info"])
def test_help_warns_that_a_pickle_runs_code_and_that_inputs_are_kept(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    if command != "fit":
        assert (
            "--allow-pickle load MODEL with joblib if it is not a skae model file; "
            "only for files you trust: loading a pickle runs any code it holds"
        ) in text
    if command != "info":
        assert (
            "--overwrite replace the output if it exists (an input is never replaced)"
        ) in text


@pytest.mark.parametrize("pandas", [True, False])
def test_only_an_empty_first_name_marks_an_index_column(
    data_files, monkeypatch, pandas
):
    tmp, X = data_files
    names = ["X", *(f"f{i}" for i in range(1, 9))]  # a first column named X
    pd.DataFrame(X, columns=names).to_csv(tmp / "named.csv", index=False)
    if not pandas:
        monkeypatch.setitem(sys.modules, "pandas", None)
    assert skae.cli.load_data(tmp / "named.csv").shape == (300, 9)


@pytest.mark.parametrize("pandas", [True, False])
@pytest.mark.parametrize(
    ("text", "error"),
    [
        # Rows wider than their header: never cut, nor read as row names.
        ("a,b\n1,2,3\n4,5,6\n", "the header names 2 columns but the rows hold 3 cells"),
        (",a,b\n0,1,2,3\n1,4,5,6\n", "the header names 3 columns but the rows hold 4"),
        ("a,b\n1,2,3\n", "the header names 2 columns but the rows hold 3 cells"),
        # Rows narrower than their header.
        ("a,b,c\n1,2\n4,5\n", "the header names 3 columns but the rows hold 2 cells"),
        # Ragged rows.
        ("a,b\n1,2\n4,5,6\n", "3"),
        ("a,b\n", "it has a header and no rows"),
        ("\n\n", "it is empty"),
        ("", "it is empty"),
    ],
)
def test_a_csv_whose_rows_do_not_fit_its_header_is_refused(
    tmp_path, monkeypatch, pandas, text, error
):
    (tmp_path / "bad.csv").write_text(text)
    if not pandas:
        monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(skae.cli.CommandError) as caught:
        skae.cli.load_data(tmp_path / "bad.csv")
    message = str(caught.value)
    assert message.startswith(f"cannot read {tmp_path / 'bad.csv'}: ")
    assert error in message
    assert "usecols" not in message and "\n" not in message
