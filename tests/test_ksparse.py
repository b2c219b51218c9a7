"""KSparseAutoencoder: sparsity, quality, reproducibility, training options."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from skae import KSparseAutoencoder


def fast(**params):
    params = {"n_components": 64, "k": 3, "max_iter": 60, "random_state": 0} | params
    return KSparseAutoencoder(**params)


def explained_variance(X, reconstruction):
    return 1 - ((X - reconstruction) ** 2).sum() / ((X - X.mean(0)) ** 2).sum()


@pytest.mark.parametrize("k", [1, 3, 7])
def test_codes_have_at_most_k_nonzeros(sparse_data, k):
    codes = fast(k=k, max_iter=5).fit_transform(sparse_data)
    nonzeros = (codes != 0).sum(axis=1)
    assert nonzeros.max() <= k
    assert nonzeros.mean() > 0.5 * k  # the ReLU rarely zeros a kept value
    assert (codes >= 0).all()


def test_beats_pca_with_k_components_on_sparse_data(sparse_data):
    sae = fast().fit(sparse_data)
    pca = PCA(n_components=3).fit(sparse_data)
    pca_ev = explained_variance(
        sparse_data, pca.inverse_transform(pca.transform(sparse_data))
    )
    assert sae.score(sparse_data) > pca_ev + 0.3
    assert sae.score(sparse_data) > 0.8


def test_score_matches_reconstruction(sparse_data):
    sae = fast(max_iter=5).fit(sparse_data)
    reconstruction = sae.inverse_transform(sae.transform(sparse_data))
    assert sae.score(sparse_data) == pytest.approx(
        explained_variance(sparse_data, reconstruction), rel=1e-5
    )
    errors = ((sparse_data - reconstruction) ** 2).sum(axis=1)
    np.testing.assert_allclose(
        sae.score_samples(sparse_data), -errors, rtol=1e-4, atol=1e-6
    )


def test_atoms_stay_unit_norm_and_match_module(sparse_data):
    sae = fast(max_iter=5).fit(sparse_data)
    assert sae.components_.shape == (64, sparse_data.shape[1])
    np.testing.assert_allclose(np.linalg.norm(sae.components_, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(
        sae.components_, sae.module_.W_dec.detach().numpy().astype(np.float64)
    )


def test_initialization_bias_at_mean_and_tied_encoder(sparse_data):
    sae = fast()
    mean = torch.from_numpy(sparse_data.mean(axis=0))
    module = sae._make_module(
        sparse_data.shape[1], mean, torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(module.b_dec.detach(), mean.float())
    torch.testing.assert_close(module.W_enc.detach(), module.W_dec.detach())
    torch.testing.assert_close(module.W_dec.norm(dim=1), torch.ones(64))


def test_same_seed_gives_bitwise_identical_codes(sparse_data):
    first = fast(max_iter=5, random_state=3).fit_transform(sparse_data)
    second = fast(max_iter=5, random_state=3).fit_transform(sparse_data)
    other = fast(max_iter=5, random_state=4).fit_transform(sparse_data)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtype_follows_input(sparse_data, dtype):
    X = sparse_data.astype(dtype)
    sae = fast(max_iter=2).fit(X)
    codes = sae.transform(X)
    assert codes.dtype == dtype
    assert sae.inverse_transform(codes).dtype == dtype
    assert sae.score_samples(X).dtype == dtype
    assert sae.components_.dtype == dtype


def test_early_stopping_restores_best_validation_weights(sparse_data):
    # A learning rate this high makes the validation loss bounce, so the last
    # epoch is rarely the best one.
    sae = fast(
        early_stopping=True, learning_rate=0.05, max_iter=30, n_iter_no_change=5, tol=0
    ).fit(sparse_data)
    scores = sae.validation_scores_
    assert len(scores) == sae.n_iter_ == len(sae.loss_curve_)
    assert sae.best_validation_score_ == max(scores)
    # Recompute the validation split the estimator used and score the kept weights.
    rng = np.random.RandomState(0)
    n_val = int(np.ceil(0.1 * len(sparse_data)))
    val_rows = np.sort(rng.permutation(len(sparse_data))[:n_val])
    assert sae.score(sparse_data[val_rows]) == pytest.approx(max(scores), abs=1e-5)


def test_stops_when_loss_stops_improving(sparse_data):
    sae = fast(max_iter=500, tol=0.05, n_iter_no_change=3).fit(sparse_data)
    assert sae.n_iter_ < 500


def test_warm_start_continues_training(sparse_data):
    sae = fast(max_iter=3, warm_start=True, tol=0).fit(sparse_data)
    first_atoms = sae.components_.copy()
    first_curve = list(sae.loss_curve_)
    sae.fit(sparse_data)
    assert sae.n_iter_ == 6
    assert sae.loss_curve_[:3] == first_curve
    assert sae.loss_curve_[3] < first_curve[0]
    assert not np.array_equal(first_atoms, sae.components_)


def test_cold_fit_restarts(sparse_data):
    sae = fast(max_iter=3, tol=0).fit(sparse_data)
    sae.fit(sparse_data)
    assert sae.n_iter_ == 3 and len(sae.loss_curve_) == 3


def test_activation_frequency_matches_transform(sparse_data):
    sae = fast(max_iter=5).fit(sparse_data)
    codes = sae.transform(sparse_data)
    np.testing.assert_allclose(
        sae.activation_frequency_, (codes != 0).mean(axis=0), atol=1e-6
    )
    # Measured after training, on every row: a model one epoch younger, or
    # half the rows, counts otherwise.
    younger = fast(max_iter=4).fit(sparse_data).activation_frequency_
    half = (sae.transform(sparse_data[::2]) != 0).mean(axis=0)
    assert np.abs(sae.activation_frequency_ - younger).max() > 1e-3
    assert np.abs(sae.activation_frequency_ - half).max() > 1e-3


def test_verbose_shows_progress(sparse_data, capsys):
    fast(max_iter=3, verbose=1).fit(sparse_data)
    err = capsys.readouterr().err
    assert "KSparseAutoencoder" in err and "3/3" in err


def test_quiet_by_default(sparse_data, capsys):
    fast(max_iter=3).fit(sparse_data)
    assert capsys.readouterr().err == ""


def test_feature_names_out():
    X = np.random.RandomState(0).randn(50, 4)
    sae = KSparseAutoencoder(n_components=5, k=2, max_iter=2).fit(X)
    names = sae.get_feature_names_out()
    assert list(names) == [f"ksparseautoencoder{i}" for i in range(5)]


def test_early_stopping_keeps_the_first_epoch_when_it_is_the_only_one(
    sparse_data, validation_rows
):
    sae = fast(early_stopping=True, max_iter=1).fit(sparse_data)
    held_out = sparse_data[validation_rows(len(sparse_data))]
    assert sae.score(held_out) == pytest.approx(sae.best_validation_score_, abs=1e-5)


def test_early_stopping_with_tol_keeps_the_best_epoch_not_the_last_big_gain(
    sparse_data, validation_rows
):
    # tol only decides when to stop; small gains still make a new best epoch.
    sae = fast(
        early_stopping=True,
        learning_rate=0.05,
        max_iter=30,
        n_iter_no_change=4,
        tol=0.05,
    ).fit(sparse_data)
    held_out = sparse_data[validation_rows(len(sparse_data))]
    assert sae.score(held_out) == pytest.approx(max(sae.validation_scores_), abs=1e-5)


def test_n_iter_no_change_counts_epochs_after_the_first(sparse_data):
    sae = fast(max_iter=50, n_iter_no_change=1, tol=10.0).fit(sparse_data)
    assert sae.n_iter_ == 2


def test_continued_training_uses_the_current_parameters(sparse_data):
    sae = fast(max_iter=3).fit(sparse_data)
    before = sae.components_.copy()
    sae.set_params(learning_rate=1e-12).partial_fit(sparse_data)
    np.testing.assert_allclose(sae.components_, before, atol=1e-6)
    sae.set_params(k=8, learning_rate=1e-3).partial_fit(sparse_data)
    assert (sae.transform(sparse_data) != 0).sum(axis=1).max() == 8
    sae.set_params(n_components=10)
    assert sae.transform(sparse_data).shape == (len(sparse_data), 64)
    with pytest.raises(ValueError, match="n_components=10 differs from the fitted"):
        sae.partial_fit(sparse_data)
    with pytest.raises(ValueError, match="n_components=10 differs from the fitted"):
        sae.set_params(warm_start=True).fit(sparse_data)


def test_successive_partial_fits_shuffle_differently(sparse_data, monkeypatch):
    from skae._engine import data

    orders = []
    original = data.IndexRows.shuffled

    def spy(self, chunk_rows, rng):
        chunks = list(original(self, chunk_rows, rng))
        orders.append(np.concatenate(chunks))
        return iter(chunks)

    monkeypatch.setattr(data.IndexRows, "shuffled", spy)
    sae = fast()
    sae.partial_fit(sparse_data)
    sae.partial_fit(sparse_data)
    assert not np.array_equal(orders[0], orders[1])


def test_far_above_pca_with_as_many_codes_on_digits(digits):
    # README.rst's figure: 128 atoms, k codes a row against PCA(k).
    X, _ = digits
    sae = KSparseAutoencoder(128, k=4, max_iter=60, random_state=0).fit(X)
    pca = PCA(n_components=4, random_state=0).fit(X)
    assert np.count_nonzero(sae.transform(X), axis=1).max() <= 4
    assert sae.score(X) > pca.explained_variance_ratio_.sum() + 0.1, sae.score(X)
