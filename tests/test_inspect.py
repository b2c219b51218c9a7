"""skae.inspect: latent statistics, top-activating rows, atom comparisons."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError

from skae import (
    ConvSparseAutoencoder,
    KLSparseAutoencoder,
    KSparseAutoencoder,
    L1SparseAutoencoder,
    StackedSparseAutoencoder,
)
from skae.inspect import (
    atom_similarity,
    dictionary_recovery,
    duplicate_atoms,
    latent_statistics,
    top_activating,
)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

FAST = {"max_iter": 2, "random_state": 0}
ESTIMATORS = {
    "ksparse": lambda: KSparseAutoencoder(12, k=3, **FAST),
    "l1": lambda: L1SparseAutoencoder(12, alpha=0.05, **FAST),
    "kl": lambda: KLSparseAutoencoder(12, **FAST),
    "stacked": lambda: StackedSparseAutoencoder((10, 6), sparsity="topk", k=3, **FAST),
    "conv": lambda: ConvSparseAutoencoder(
        (4, 4), n_components=3, kernel_size=3, **FAST
    ),
}


@pytest.fixture(scope="module")
def X():
    return np.random.RandomState(0).standard_normal((90, 16))


@pytest.fixture(scope="module")
def fitted(X):
    return {name: make().fit(X) for name, make in ESTIMATORS.items()}


@pytest.fixture(scope="module")
def ksparse(fitted):
    return fitted["ksparse"]


def dense_statistics(codes):
    fires = codes != 0
    with np.errstate(invalid="ignore"):
        mean_active = codes.sum(axis=0) / fires.sum(axis=0)
    return {
        "firing_frequency": fires.mean(axis=0),
        "mean_activation": codes.mean(axis=0, dtype=np.float64),
        "mean_active_activation": mean_active,
    }


def assert_statistics_match(stats, codes):
    assert stats.n_samples == codes.shape[0]
    for name, expected in dense_statistics(codes).items():
        np.testing.assert_allclose(stats[name], expected, rtol=1e-6, atol=1e-9)
        assert stats[name].dtype == np.float64


def top_reference(codes, latent, n):
    """Rows by decreasing code, the earlier row first among equal codes."""
    rows = np.lexsort((np.arange(len(codes)), -codes[:, latent]))[:n]
    return rows, codes[rows, latent]


def small_batches(monkeypatch, estimator, rows=7):
    monkeypatch.setattr(type(estimator), "_inference_batch_rows", lambda self: rows)


# -------------------------------------------------------- latent_statistics


@pytest.mark.parametrize("name", ESTIMATORS)
def test_statistics_match_dense_codes_of_every_estimator(fitted, X, name):
    estimator = fitted[name]
    assert_statistics_match(latent_statistics(estimator, X), estimator.transform(X))


def test_statistics_of_memmap_sparse_and_float32_input(ksparse, X, tmp_path):
    path = tmp_path / "X.npy"
    np.save(path, X)
    memmap = np.load(path, mmap_mode="r")
    codes = ksparse.transform(X)
    assert_statistics_match(latent_statistics(ksparse, memmap), codes)

    X_sparse = X.copy()
    X_sparse[np.abs(X_sparse) < 1] = 0
    codes = ksparse.transform(X_sparse)
    for matrix in (sp.csr_matrix, sp.csc_matrix):
        assert_statistics_match(latent_statistics(ksparse, matrix(X_sparse)), codes)

    X32 = X.astype(np.float32)
    assert_statistics_match(latent_statistics(ksparse, X32), ksparse.transform(X32))


def test_statistics_are_streamed_over_several_batches(ksparse, X, monkeypatch):
    small_batches(monkeypatch, ksparse)
    assert_statistics_match(latent_statistics(ksparse, X), ksparse.transform(X))


def test_never_firing_latents_have_nan_mean_active_activation(ksparse, X):
    stats = latent_statistics(ksparse, X[:1])
    silent = stats.firing_frequency == 0
    assert silent.sum() >= ksparse.n_components - ksparse.k
    assert np.isnan(stats.mean_active_activation[silent]).all()
    assert not np.isnan(stats.mean_active_activation[~silent]).any()
    assert (stats.mean_activation[silent] == 0).all()


def test_firing_frequency_is_the_share_of_rows_whose_code_is_not_zero():
    X = np.random.RandomState(1).standard_normal((300, 10)).astype(np.float32)
    sae = KSparseAutoencoder(24, k=4, max_iter=3, random_state=0).fit(X)
    stats = latent_statistics(sae, X)
    expected = (sae.transform(X) != 0).mean(axis=0)
    np.testing.assert_allclose(stats.firing_frequency, expected)
    # The fit's figure is its last epoch's, as its weights moved: close.
    assert np.abs(stats.firing_frequency - sae.activation_frequency_).max() < 0.05


# ------------------------------------------------------------ top_activating


@pytest.mark.parametrize("n", [1, 5, 90, 200])
def test_top_rows_match_an_argsort(ksparse, X, n):
    codes = ksparse.transform(X)
    for latent in range(ksparse.n_components):
        rows, activations = top_activating(ksparse, X, latent, n=n)
        expected_rows, expected = top_reference(codes, latent, n)
        assert rows.shape == (min(n, len(X)),)
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_array_equal(activations, expected)


def test_ties_go_to_the_earlier_row_across_batches(ksparse, X, monkeypatch):
    # Each row three times, 41 rows apart, in batches of 7 rows: equal codes
    # in different batches and at different places within a batch.
    X_repeated = np.vstack([X[:41]] * 3)
    small_batches(monkeypatch, ksparse)
    codes = ksparse.transform(X_repeated)
    latents = np.arange(ksparse.n_components)
    rows, activations = top_activating(ksparse, X_repeated, latents, n=30)
    assert rows.shape == activations.shape == (len(latents), 30)
    for latent in latents:
        expected_rows, expected = top_reference(codes, latent, 30)
        np.testing.assert_array_equal(rows[latent], expected_rows)
        np.testing.assert_array_equal(activations[latent], expected)
    # Ties happen here: zero codes, and the same row's three copies.
    assert any(len(set(a)) < len(a) for a in activations)


@pytest.mark.parametrize("name", ["stacked", "conv", "kl"])
def test_top_rows_of_other_estimators(fitted, X, name):
    estimator = fitted[name]
    codes = estimator.transform(X)
    rows, activations = top_activating(estimator, X, [0, codes.shape[1] - 1], n=4)
    for i, latent in enumerate([0, codes.shape[1] - 1]):
        expected_rows, expected = top_reference(codes, latent, 4)
        np.testing.assert_array_equal(rows[i], expected_rows)
        np.testing.assert_array_equal(activations[i], expected)


def test_activations_keep_the_float_dtype(ksparse, X):
    X32 = X.astype(np.float32)
    _, activations = top_activating(ksparse, X32, 0, n=3)
    assert activations.dtype == np.float32
    assert top_activating(ksparse, X, 0, n=3)[1].dtype == np.float64


# ---------------------------------------------------------------- atoms


def test_similarity_is_the_cosine_matrix(ksparse):
    atoms = np.random.RandomState(0).standard_normal((7, 5))
    unit = atoms / np.linalg.norm(atoms, axis=1, keepdims=True)
    np.testing.assert_allclose(atom_similarity(atoms), unit @ unit.T, atol=1e-12)
    similarity = atom_similarity(ksparse)
    assert similarity.shape == (12, 12) and similarity.dtype == np.float64
    np.testing.assert_allclose(np.diag(similarity), 1, atol=1e-6)
    np.testing.assert_allclose(similarity, similarity.T, atol=1e-7)


def test_similarity_of_a_zero_atom_is_zero():
    similarity = atom_similarity(np.array([[1.0, 2.0], [0.0, 0.0]], np.float32))
    assert similarity.dtype == np.float32
    np.testing.assert_array_equal(similarity[1], [0, 0])


def test_duplicates_find_a_planted_pair_and_nothing_in_random_atoms(monkeypatch):
    rng = np.random.RandomState(0)
    atoms = rng.standard_normal((300, 64))
    pairs, similarities = duplicate_atoms(atoms, threshold=0.9)
    assert pairs.shape == (0, 2) and similarities.shape == (0,)

    atoms[217] = 3 * atoms[41] + 0.01 * rng.standard_normal(64)  # same direction
    atoms[90] = -atoms[12]  # opposite: not a duplicate
    # Blocks of 50 rows, so that the pair is found across blocks.
    monkeypatch.setattr("skae.inspect._BLOCK_ENTRIES", 50 * 300)
    pairs, similarities = duplicate_atoms(atoms, threshold=0.9)
    np.testing.assert_array_equal(pairs, [[41, 217]])
    assert similarities[0] > 0.99


def test_duplicates_are_sorted_by_similarity_and_match_the_dense_matrix(
    monkeypatch,
):
    rng = np.random.RandomState(1)
    atoms = rng.standard_normal((40, 3))  # low dimension: many close pairs
    monkeypatch.setattr("skae.inspect._BLOCK_ENTRIES", 7 * 40)
    pairs, similarities = duplicate_atoms(atoms, threshold=0.8)
    dense = atom_similarity(atoms)
    i, j = np.nonzero(np.triu(dense >= 0.8, k=1))
    assert {tuple(p) for p in pairs} == set(zip(i.tolist(), j.tolist(), strict=True))
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert (np.diff(similarities) <= 0).all()
    np.testing.assert_allclose(similarities, dense[pairs[:, 0], pairs[:, 1]])


def test_recovery_of_a_permuted_sign_flipped_copy_is_perfect(monkeypatch):
    rng = np.random.RandomState(0)
    true_atoms = rng.standard_normal((50, 20))
    order = rng.permutation(50)
    signs = rng.choice([-1.0, 1.0], size=(50, 1))
    learned = (signs * 2.5 * true_atoms)[order].astype(np.float32)
    monkeypatch.setattr("skae.inspect._BLOCK_ENTRIES", 8 * 50)
    recovery = dictionary_recovery(true_atoms, learned)
    np.testing.assert_allclose(recovery.best_cosine, 1, atol=1e-6)
    np.testing.assert_array_equal(order[recovery.best_match], np.arange(50))
    assert recovery.recovered_fraction == 1.0
    assert recovery.mean_best_cosine == pytest.approx(1, abs=1e-6)


def test_recovery_of_random_atoms_is_low():
    rng = np.random.RandomState(0)
    true_atoms, learned = rng.standard_normal((2, 50, 64))
    recovery = dictionary_recovery(true_atoms, learned, threshold=0.9)
    assert recovery.mean_best_cosine < 0.5
    assert recovery.recovered_fraction == 0.0
    assert recovery.best_cosine.shape == recovery.best_match.shape == (50,)


def test_recovery_reads_any_fitted_estimators_components(X):
    pca = PCA(4).fit(X)
    recovery = dictionary_recovery(pca.components_[::-1], pca)
    np.testing.assert_array_equal(recovery.best_match, [3, 2, 1, 0])
    assert recovery.recovered_fraction == 1.0


# ------------------------------------------------------------------ errors


def test_unfitted_estimators_are_refused(X):
    for call in (
        lambda sae: latent_statistics(sae, X),
        lambda sae: top_activating(sae, X, 0),
        atom_similarity,
        duplicate_atoms,
        lambda sae: dictionary_recovery(np.eye(16), sae),
    ):
        with pytest.raises(NotFittedError):
            call(KSparseAutoencoder(8, k=2))


def test_bad_latents_and_n_are_clear_errors(ksparse, X):
    with pytest.raises(ValueError, match=r"latent 12 is out of range.*12 latents"):
        top_activating(ksparse, X, 12)
    with pytest.raises(ValueError, match="latent -1 is out of range"):
        top_activating(ksparse, X, [0, -1])
    with pytest.raises(ValueError, match="'latent' parameter"):
        top_activating(ksparse, X, -1)
    with pytest.raises(ValueError, match="non-empty 1-D list of ints"):
        top_activating(ksparse, X, [])
    with pytest.raises(ValueError, match="non-empty 1-D list of ints"):
        top_activating(ksparse, X, [0.5])
    with pytest.raises(ValueError, match="'n' parameter"):
        top_activating(ksparse, X, 0, n=0)


def test_wrong_number_of_features_is_a_clear_error(ksparse, X):
    with pytest.raises(ValueError, match="16 features"):
        latent_statistics(ksparse, X[:, :5])
    with pytest.raises(ValueError, match="16 features"):
        top_activating(ksparse, X[:, :5], 0)
    with pytest.raises(ValueError, match="true_atoms have 5 features"):
        dictionary_recovery(np.eye(5), ksparse)


def test_bad_inputs_are_refused(ksparse, X):
    with pytest.raises(ValueError, match="NaN"):
        latent_statistics(ksparse, np.where(X > 2, np.nan, X))
    with pytest.raises(ValueError, match="'estimator' parameter"):
        latent_statistics(PCA(2).fit(X), X)
    with pytest.raises(ValueError, match="'threshold' parameter"):
        duplicate_atoms(ksparse, threshold=1.5)
    with pytest.raises(ValueError, match="NaN"):
        atom_similarity([[1.0, np.nan]])


def test_inputs_are_not_modified(ksparse, X):
    X_copy = X.copy()
    X_sparse = sp.csr_matrix(np.where(np.abs(X) < 1, 0, X))
    data = X_sparse.data.copy()
    latent_statistics(ksparse, X)
    top_activating(ksparse, X, [0, 1], n=5)
    latent_statistics(ksparse, X_sparse)
    atoms = ksparse.components_.copy()
    true_atoms = np.random.RandomState(0).standard_normal((5, 16))
    true_copy = true_atoms.copy()
    atom_similarity(ksparse)
    duplicate_atoms(ksparse, threshold=-1)
    dictionary_recovery(true_atoms, ksparse)
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(X_sparse.data, data)
    np.testing.assert_array_equal(ksparse.components_, atoms)
    np.testing.assert_array_equal(true_atoms, true_copy)


# -------------------------------------------------------------------- CUDA


@requires_cuda
def test_helpers_on_cuda_match_the_cpu(X):
    sae = KSparseAutoencoder(12, k=3, device="cuda", **FAST).fit(X)
    codes = sae.transform(X)
    assert_statistics_match(latent_statistics(sae, X), codes)
    rows, activations = top_activating(sae, X, 2, n=8)
    expected_rows, expected = top_reference(codes, 2, 8)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(activations, expected)
    similarity = atom_similarity(sae)
    cpu = atom_similarity(sae.components_)
    np.testing.assert_allclose(similarity, cpu, atol=1e-6)
    pairs, _ = duplicate_atoms(sae, threshold=-1)
    assert len(pairs) == 12 * 11 // 2
