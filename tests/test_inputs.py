"""Input handling: validation errors, sparse, memmap, pandas, no mutation."""

import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import skae._base
import skae._engine.data
import skae._engine.training
from skae import KSparseAutoencoder


def model(**params):
    return KSparseAutoencoder(
        **({"n_components": 16, "k": 4, "max_iter": 3, "random_state": 0} | params)
    )


@pytest.fixture
def no_training(monkeypatch, hook):
    """Fail the test if any training starts."""

    def forbidden(*args, **kwargs):
        raise AssertionError("training started before the input was rejected")

    monkeypatch.setattr(skae._base, "train", forbidden)
    hook(train_begin=forbidden)


def with_value(X, value, row=3, col=2):
    X = X.copy()
    X[row, col] = value
    return X


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.nan, r"NaN \(first at row 3, column 2\)"),
        (np.inf, r"infinity \(first at row 3, column 2\)"),
    ],
)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_non_finite_input_is_rejected_before_training(
    small_X, value, message, method, no_training
):
    X = with_value(small_X, value)
    before = X.copy()
    with pytest.raises(ValueError, match=message):
        getattr(model(), method)(X)
    np.testing.assert_array_equal(X, before)


def test_non_finite_sparse_input_names_position(small_X, no_training):
    X = sp.csr_matrix(with_value(small_X, -np.inf, row=7, col=1))
    with pytest.raises(ValueError, match=r"infinity \(first at row 7, column 1\)"):
        model().fit(X)


@pytest.mark.parametrize(
    ("X", "error", "message"),
    [
        (np.empty((0, 4)), ValueError, "0 sample"),
        (np.arange(10.0), ValueError, "Expected 2D array"),
        ([["a", "b"], ["c", "d"]], ValueError, "could not convert string"),
        (np.array([[1 + 1j, 2]]), ValueError, "Complex data not supported"),
        (np.zeros((4, 2), dtype="datetime64[s]"), TypeError, "dates or durations"),
        (np.ones((4, 2), dtype="timedelta64[ms]"), TypeError, "dates or durations"),
        (
            [[np.datetime64("2026-12-01"), np.datetime64("2026-12-02")]],
            TypeError,
            "dates",
        ),
    ],
)
def test_malformed_input_is_rejected(X, error, message, no_training):
    with pytest.raises(error, match=message):
        model().fit(X)


def test_a_table_with_a_date_column_is_rejected(no_training):
    frame = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0], "when": pd.date_range("2026", periods=3)}
    )
    with pytest.raises(TypeError, match="dates or durations"):
        model().fit(frame)


@pytest.mark.parametrize("scale", [1e10, 1e30, np.finfo(np.float64).max / 2])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.filterwarnings("error")  # the error alone, no overflow warning first
def test_data_too_large_for_float32_training_is_rejected(
    small_X, scale, method, no_training
):
    X = small_X * (scale / np.abs(small_X).max())
    before = X.copy()
    with pytest.raises(
        ValueError, match=r"values up to .* beyond the 1e\+09 .*StandardScaler"
    ):
        getattr(model(), method)(X)
    np.testing.assert_array_equal(X, before)


def test_data_at_the_training_limit_trains(small_X):
    X = small_X * (1e9 / np.abs(small_X).max())
    sae = model().fit(X)
    assert np.isfinite(sae.score_samples(X)).all()


def test_inference_is_finite_or_refused_whatever_the_magnitude(small_X):
    sae = model().fit(small_X)
    for dtype, scale in [(np.float64, 1e100), (np.float32, 1e15)]:
        X = (small_X * scale).astype(dtype)
        for method in ("transform", "score_samples", "score"):
            assert np.isfinite(getattr(sae, method)(X)).all()
    for dtype, scale in [(np.float64, 1e200), (np.float32, 1e30)]:
        X = (small_X * scale).astype(dtype)
        for method in ("transform", "score_samples", "score"):
            with pytest.raises(
                ValueError, match=f"in {np.dtype(dtype).name}, the squared"
            ):
                getattr(sae, method)(X)
    # Codes that add up, through the first feature's weights, past float32.
    codes = 3e38 * np.sign(sae.components_[:, :1].T).astype(np.float32)
    with pytest.raises(ValueError, match="reconstructions overflow float32"):
        sae.inverse_transform(codes)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"k": 17}, r"k=17 must be at most n_components=16"),
        (
            {"k": 0},
            r"'k' parameter of KSparseAutoencoder must be an int in the range \[1, ",
        ),
        ({"n_components": 0}, "'n_components' parameter"),
        ({"learning_rate": -1.0}, "'learning_rate' parameter"),
        ({"device": "gpu"}, "device='gpu' is not a device torch knows"),
    ],
)
def test_bad_parameters_are_rejected_before_training(
    small_X, params, message, no_training
):
    with pytest.raises(ValueError, match=message):
        model(**params).fit(small_X)


def test_early_stopping_without_enough_rows(no_training):
    with pytest.raises(ValueError, match="leaves no training or no validation rows"):
        model(early_stopping=True).fit(np.ones((1, 3)))


def test_wrong_number_of_features_at_transform(small_X):
    sae = model().fit(small_X)
    for method in ("transform", "score_samples", "score"):
        with pytest.raises(
            ValueError, match="X has 5 features, but KSparseAutoencoder is expecting 6"
        ):
            getattr(sae, method)(small_X[:, :5])
    with pytest.raises(
        ValueError, match="codes with 15 columns, but KSparseAutoencoder decodes 16"
    ):
        sae.inverse_transform(np.zeros((2, 15)))


def test_input_is_never_modified(small_X):
    for X in (small_X.copy(), small_X.astype(np.float32), sp.csr_matrix(small_X)):
        before = X.copy()
        sae = model().fit(X)
        sae.partial_fit(X)
        sae.transform(X)
        sae.score(X)
        if sp.issparse(X):
            assert (X != before).nnz == 0
        else:
            np.testing.assert_array_equal(X, before)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_input_gives_the_same_model_as_dense(sparse_data, fmt):
    X = sparse_data.copy()
    X[np.abs(X) < 0.3] = 0
    X_sparse = sp.csr_matrix(X) if fmt == "csr" else sp.csc_matrix(X)
    dense = model(max_iter=4).fit(X)
    sparse = model(max_iter=4).fit(X_sparse)
    np.testing.assert_array_equal(dense.transform(X), sparse.transform(X_sparse))
    np.testing.assert_array_equal(dense.components_, sparse.components_)
    assert dense.score(X) == pytest.approx(sparse.score(X_sparse), rel=1e-10)


def test_sparse_input_is_densified_one_batch_at_a_time(monkeypatch):
    X = sp.random(70_000, 32, density=0.05, format="csr", random_state=0)
    densified = []
    original = skae._engine.data.to_tensor

    def spy(rows, *args):
        densified.append(rows.shape[0])
        return original(rows, *args)

    monkeypatch.setattr(skae._engine.data, "to_tensor", spy)
    sae = model(batch_size=500, max_iter=1).fit(X)
    assert densified.count(500) >= 140  # the training batches
    assert max(densified) <= sae._inference_batch_rows() < X.shape[0]
    densified.clear()
    sae.transform(X)
    assert max(densified) == sae._inference_batch_rows() < X.shape[0]


def test_list_and_pandas_input(small_X):
    frame = pd.DataFrame(small_X, columns=[f"f{i}" for i in range(6)])
    from_frame = model().fit(frame)
    assert list(from_frame.feature_names_in_) == list(frame.columns)
    from_list = model().fit(small_X.tolist())
    np.testing.assert_array_equal(
        from_frame.transform(frame), from_list.transform(small_X)
    )
    out = model().set_output(transform="pandas").fit(frame).transform(frame)
    assert list(out.columns) == [f"ksparseautoencoder{i}" for i in range(16)]
    assert list(out.index) == list(frame.index)


def memmap_of(path, X, n_copies):
    np.save(path, np.tile(X, (n_copies, 1)).astype(np.float32))
    return np.load(path, mmap_mode="r")


def peak_traced_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memmap_fit_memory_does_not_grow_with_rows(tmp_path, sparse_data, monkeypatch):
    # 64 KiB chunks; numpy's allocations are what tracemalloc sees.
    monkeypatch.setattr(skae._engine.data, "CHUNK_BYTES", 2**16)
    small = memmap_of(tmp_path / "small.npy", sparse_data, 4)
    large = memmap_of(tmp_path / "large.npy", sparse_data, 32)
    assert isinstance(large, np.memmap)
    model(max_iter=1).fit(small[:10])  # first-use imports inside torch are not data
    peaks = [
        peak_traced_bytes(lambda X=X: model(batch_size=256, max_iter=1).fit(X))
        for X in (small, large)
    ]
    assert peaks[1] < 1.25 * peaks[0] + 2**16
    assert peaks[1] < large.nbytes / 10


def test_memmap_input_gives_the_same_results_as_in_memory(tmp_path, sparse_data):
    X = memmap_of(tmp_path / "X.npy", sparse_data, 1)
    in_ram = np.asarray(X).copy()
    sae = model(max_iter=30).fit(X)
    np.testing.assert_array_equal(sae.transform(X), sae.transform(in_ram))
    assert sae.score(X) == pytest.approx(sae.score(in_ram), rel=1e-10)
    assert sae.score(X) > 0.5
    with_validation = model(early_stopping=True, batch_size=64).fit(X)
    assert len(with_validation.validation_scores_) == with_validation.n_iter_


def test_memmap_with_nan_is_rejected(tmp_path, no_training):
    X = np.lib.format.open_memmap(
        tmp_path / "X.npy", mode="w+", dtype=np.float64, shape=(50, 3)
    )
    X[:] = 1.0
    X[41, 2] = np.nan
    X.flush()
    with pytest.raises(ValueError, match=r"NaN \(first at row 41, column 2\)"):
        model().fit(np.load(tmp_path / "X.npy", mmap_mode="r"))


_RSS_SCRIPT = """
import sys, numpy as np
from skae import KSparseAutoencoder

def status(key):
    text = open("/proc/self/status").read()
    return int(text.split(key + ":")[1].split()[0]) * 1024

def model():
    return KSparseAutoencoder(
        n_components=64, k=8, batch_size=512, max_iter=1, random_state=0
    )

model().fit(np.random.RandomState(0).randn(4096, 64).astype(np.float32))
before = status("VmRSS")
model().fit(np.load(sys.argv[1], mmap_mode="r"))
print(status("VmHWM") - before)
"""


def resident_growth_of_memmap_fit(path, n_rows, env):
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_rows, 64))
    for start in range(0, n_rows, 102_400):
        stop = min(start + 102_400, n_rows)
        X[start:stop] = np.random.RandomState(start).randn(stop - start, 64)
    X.flush()
    del X
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_memmap_fit_resident_memory_does_not_grow_with_rows(tmp_path, python_env):
    # Resident memory counts the file pages a memmap maps in; the fit must
    # release them as it goes. A fixed overhead of a few chunk buffers is
    # expected; what must not appear is memory that scales with the file.
    small = resident_growth_of_memmap_fit(
        tmp_path / "small.npy", 102_400, python_env
    )  # 25 MiB
    large = resident_growth_of_memmap_fit(
        tmp_path / "large.npy", 409_600, python_env
    )  # 100 MiB
    mib = 2**20
    assert large < small + 25 * mib, f"{small / mib:.0f} MiB vs {large / mib:.0f} MiB"
    assert large < 75 * mib


def test_big_endian_float32_memmap_keeps_float32(tmp_path, sparse_data):
    np.save(tmp_path / "X.npy", sparse_data.astype(">f4"))
    X = np.load(tmp_path / "X.npy", mmap_mode="r")
    sae = model().fit(X)
    assert sae.components_.dtype == np.float32
    assert sae.transform(X).dtype == np.float32


def test_memmap_validation_holds_out_about_the_requested_fraction():
    from skae._engine.data import BlockRows

    rows = BlockRows(np.arange(400), block_size=250, n_rows=100_000)
    rest, taken = rows.split(10_000, np.random.RandomState(0))
    assert len(taken) == 10_000 and len(rest) == 90_000
    assert not set(taken.blocks) & set(rest.blocks)


def test_failed_refit_leaves_the_fitted_model_usable(digits):
    X, _ = digits
    sae = model().fit(X)
    codes = sae.transform(X)
    with pytest.raises(ValueError, match="Training diverged"):
        sae.set_params(learning_rate=1e30).fit(np.random.RandomState(0).randn(50, 10))
    assert sae.n_features_in_ == 64
    np.testing.assert_array_equal(sae.transform(X), codes)


@pytest.mark.parametrize("sparse", [False, True])
def test_the_sums_of_float32_rows_far_from_zero_keep_their_variance(sparse):
    # Squared in float32, values around 1e4 keep 3 digits of their 1e8
    # squares: the variance (the explained variance's denominator) is lost.
    from skae._engine.data import RowSource, column_sums

    X = (1e4 + np.random.RandomState(0).randn(2000, 3)).astype(np.float32)
    col_sum, squares, n = column_sums(RowSource(sp.csr_matrix(X) if sparse else X))
    exact = X.astype(np.float64)
    assert n == 2000
    np.testing.assert_allclose(col_sum, exact.sum(axis=0), rtol=1e-12)
    variance = squares - col_sum @ col_sum / n
    expected = ((exact - exact.mean(axis=0)) ** 2).sum()
    assert variance == pytest.approx(expected, rel=1e-6)
