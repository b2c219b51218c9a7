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


def test_activation_frequency_is_what_the_last_epoch_fired(
    sparse_data, monkeypatch, last_epoch_activity
):
    """fit reads the firing of its last epoch's steps, with no pass of its
    own after training: the weights moved through that epoch, so it is
    near, not equal to, what the final weights fire on."""
    measured = []
    monkeypatch.setattr(
        KSparseAutoencoder, "_measure", lambda *a: measured.append(1) or 1 / 0
    )
    sae = fast(max_iter=5, early_stopping=False).fit(sparse_data)
    assert measured == []
    assert last_epoch_activity.rows == len(sparse_data)
    np.testing.assert_allclose(sae.activation_frequency_, last_epoch_activity.frequency)
    codes = sae.transform(sparse_data)
    final = (codes != 0).mean(axis=0)
    assert 0 < np.abs(sae.activation_frequency_ - final).max() < 0.05
    # A model one epoch younger, or half the rows, counts otherwise.
    younger = fast(max_iter=4, early_stopping=False).fit(sparse_data)
    half = (sae.transform(sparse_data[::2]) != 0).mean(axis=0)
    assert (
        np.abs(sae.activation_frequency_ - younger.activation_frequency_).max() > 1e-3
    )
    assert np.abs(sae.activation_frequency_ - half).max() > 1e-3


def count_passes_after_training(sae):
    """A list that gains an entry each time ``sae`` measures its statistics
    in a pass after training."""
    measured = []
    original = KSparseAutoencoder._measure

    def measure(self, *args):
        measured.append(1)
        return original(self, *args)

    sae._measure = measure.__get__(sae)
    return measured


@pytest.mark.parametrize(
    "params",
    [
        {"k_mode": "batch", "early_stopping": False},  # trains unlike it infers
        # This rate overshoots: epoch 5 scores better on validation than
        # epoch 6, and its weights are kept.
        {
            "n_components": 16,
            "k": 4,
            "max_iter": 6,
            "early_stopping": True,
            "learning_rate": 0.1,
            "learning_rate_schedule": "constant",
            "warmup": 0.0,
            "batch_size": 256,
        },
    ],
    ids=["batch-top-k", "earlier-best-epoch"],
)
def test_activation_frequency_is_measured_when_training_did_not_see_the_model(
    sparse_data, params, validation_rows
):
    sae = fast(**{"max_iter": 5} | params)
    measured = count_passes_after_training(sae)
    sae.fit(sparse_data)
    assert measured == [1]
    training = sparse_data
    if params["early_stopping"]:
        scores = sae.validation_scores_
        assert int(np.argmax(scores)) == 4 and sae.n_iter_ == 6
        training = np.delete(sparse_data, validation_rows(len(sparse_data)), axis=0)
    codes = sae.transform(training)
    np.testing.assert_allclose(
        sae.activation_frequency_, (codes != 0).mean(axis=0), atol=1e-6
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_last_epoch_worse_than_the_mean_is_measured_before_warning(sparse_data):
    """The last epoch's error says the model is worse than the mean: a
    pass with the kept weights confirms it before fit warns."""
    # 16 random atoms of 256 add far more than a 32-feature row holds.
    sae = fast(
        n_components=256, k=16, max_iter=1, learning_rate=1e-7, early_stopping=False
    )
    measured = count_passes_after_training(sae)
    with pytest.warns(RuntimeWarning, match="worse than X's mean") as record:
        sae.fit(sparse_data)
    assert measured == [1]
    score = float(
        record[0].message.args[0].split("explained variance of ")[1].split()[0]
    )
    assert score == pytest.approx(sae.score(sparse_data), abs=1e-3)
