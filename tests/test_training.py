"""Long-run safety: divergence, interruption."""

import itertools
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

import skae._engine.training
from skae import KSparseAutoencoder, StackedSparseAutoencoder, TrainingDivergedError


def model(**params):
    return KSparseAutoencoder(
        **({"n_components": 16, "k": 4, "max_iter": 5, "random_state": 0} | params)
    )


def test_data_that_would_overflow_float32_is_refused_before_training(
    sparse_data, monkeypatch
):
    huge = sparse_data * 1e25  # finite, but its squares overflow float32
    epochs = count_epochs(monkeypatch)
    sae = model()
    with pytest.raises(ValueError, match=r"values up to 3\.\d+e\+25.*StandardScaler"):
        sae.fit(huge)
    assert not hasattr(sae, "module_")
    assert epochs == []


def test_divergence_during_warm_start_keeps_the_model_before_the_call(sparse_data):
    sae = model(warm_start=True).fit(sparse_data)
    before = {k: v.clone() for k, v in sae.module_.state_dict().items()}
    components, curve = sae.components_.copy(), list(sae.loss_curve_)
    with pytest.raises(TrainingDivergedError, match=r"loss grew to .* times its lowest"):
        sae.set_params(learning_rate=10.0).fit(sparse_data)
    for name, value in sae.module_.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, equal_nan=True)
    np.testing.assert_array_equal(sae.components_, components)
    assert sae.loss_curve_ == curve
    assert np.isfinite(sae.transform(sparse_data)).all()


def test_divergence_during_partial_fit_keeps_the_model_before_the_call(sparse_data):
    sae = model().partial_fit(sparse_data)
    before = sae.components_.copy()
    with pytest.raises(TrainingDivergedError, match="Training diverged"):
        sae.set_params(learning_rate=1e3).partial_fit(sparse_data)
    np.testing.assert_array_equal(sae.components_, before)
    assert all(torch.isfinite(p).all() for p in sae.module_.parameters())
    assert sae.n_iter_ == 1
    sae.set_params(learning_rate=3e-3).partial_fit(sparse_data)
    assert all(torch.isfinite(p).all() for p in sae.module_.parameters())


def count_epochs(monkeypatch):
    """A list that gains an item for every training epoch run from now on."""
    original = skae._engine.training.train_epoch
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(skae._engine.training, "train_epoch", counted)
    return calls


def test_refit_without_early_stopping_drops_stale_validation_scores(sparse_data):
    sae = model(early_stopping=True).fit(sparse_data)
    assert len(sae.validation_scores_) == sae.n_iter_
    sae.set_params(early_stopping=False).fit(sparse_data)
    assert not hasattr(sae, "validation_scores_")


def interrupt_on_epoch(monkeypatch, epoch):
    original = skae._engine.training.train_epoch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(skae._engine.training, "train_epoch", interrupted)


def test_ctrl_c_keeps_the_best_weights_and_warns(sparse_data, monkeypatch):
    interrupt_on_epoch(monkeypatch, 4)
    with pytest.warns(RuntimeWarning, match="interrupted after 3 epoch.*best weights"):
        sae = model(early_stopping=True, max_iter=50).fit(sparse_data)
    assert sae.n_iter_ == 3
    assert np.isfinite(sae.transform(sparse_data)).all()


def test_ctrl_c_without_validation_keeps_last_epoch(sparse_data, monkeypatch):
    interrupt_on_epoch(monkeypatch, 3)
    with pytest.warns(RuntimeWarning, match="interrupted after 2 epoch.*last weights"):
        interrupted = model(max_iter=50).fit(sparse_data)
    monkeypatch.undo()
    two_epochs = model(max_iter=2, tol=0).fit(sparse_data)
    np.testing.assert_array_equal(interrupted.components_, two_epochs.components_)


def test_loss_curve_decreases(sparse_data):
    curve = model(max_iter=20, tol=0).fit(sparse_data).loss_curve_
    assert len(curve) == 20
    assert all(later < earlier for earlier, later in itertools.pairwise(curve))
    assert curve[-1] < 0.6 * curve[0]


def test_weights_that_overflow_in_the_last_step_are_caught(sparse_data):
    with pytest.raises(ValueError, match="Training diverged"):
        model(learning_rate=1e30, max_iter=1).fit(sparse_data)


def test_failure_after_some_epochs_of_a_warm_fit_leaves_the_model_as_it_was(
    sparse_data, monkeypatch
):
    sae = model(warm_start=True).fit(sparse_data)
    codes = sae.transform(sparse_data)
    original = skae._engine.training.train_epoch
    calls = []

    def poisoned(module, *args, **kwargs):
        loss = original(module, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                module.W_enc.fill_(float("nan"))
        return loss

    monkeypatch.setattr(skae._engine.training, "train_epoch", poisoned)
    with pytest.raises(ValueError, match="Training diverged"):
        sae.fit(sparse_data)
    assert len(calls) == 3
    np.testing.assert_array_equal(sae.transform(sparse_data), codes)


def test_running_out_of_epochs_warns_of_convergence(sparse_data):
    sae = KSparseAutoencoder(48, k=3, max_iter=2, random_state=0)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        sae.fit(sparse_data)
    assert sae.n_iter_ == 2


def test_a_fit_that_settles_does_not_warn(sparse_data):
    # Any improvement under 10x the best loss counts as none: it settles
    # n_iter_no_change epochs after the first, long before max_iter.
    sae = KSparseAutoencoder(48, k=3, max_iter=50, tol=10.0, n_iter_no_change=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        sae.fit(sparse_data)
    assert sae.n_iter_ == 3


def test_partial_fit_and_unrefined_stacks_do_not_warn(sparse_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        KSparseAutoencoder(48, k=3, random_state=0).partial_fit(sparse_data)
        StackedSparseAutoencoder((16, 8), max_iter=2, fine_tune=False).fit(sparse_data)


def test_an_interrupted_fit_does_not_warn_of_convergence(sparse_data, monkeypatch):
    # Ctrl-C while the last epoch is validated: every epoch ran, yet the fit
    # was stopped, not left to run out.
    original = skae._engine.training.evaluate
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(skae._engine.training, "evaluate", interrupted)
    sae = KSparseAutoencoder(48, k=3, max_iter=2, early_stopping=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.warns(RuntimeWarning, match="interrupted"):
            sae.fit(sparse_data)
    assert sae.n_iter_ == 2


def test_a_warning_turned_error_leaves_a_whole_fitted_model(sparse_data):
    sae = KSparseAutoencoder(48, k=3, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning):
            sae.fit(sparse_data)
    assert sae.n_features_in_ == sparse_data.shape[1]
    assert sae.activation_frequency_.shape == (48,)
    assert sae.transform(sparse_data).shape == (len(sparse_data), 48)
