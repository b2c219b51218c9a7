"""Long-run safety: divergence, interruption."""

import itertools
import math
import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

import skae._base
import skae._engine.training
from skae import (
    ConvSparseAutoencoder,
    JumpReLUSparseAutoencoder,
    KLSparseAutoencoder,
    KSparseAutoencoder,
    L1SparseAutoencoder,
    StackedSparseAutoencoder,
    TrainingDivergedError,
)

#: The training settings these tests' figures were measured with (the
#: defaults before issue 15): a constant rate, 8 steps an epoch here.
CONSTANT = {
    "learning_rate": 3e-3,
    "learning_rate_schedule": "constant",
    "warmup": 0.0,
    "batch_size": 256,
}


def model(**params):
    defaults = {"n_components": 16, "k": 4, "max_iter": 5, "random_state": 0}
    return KSparseAutoencoder(**(defaults | CONSTANT | params))


def test_data_that_would_overflow_float32_is_refused_before_training(
    count_epochs, sparse_data, monkeypatch
):
    huge = sparse_data * 1e25  # finite, but its squares overflow float32
    epochs = count_epochs()
    sae = model()
    with pytest.raises(ValueError, match=r"values up to 3\.\d+e\+25.*StandardScaler"):
        sae.fit(huge)
    assert not hasattr(sae, "module_")
    assert epochs == []


def test_divergence_during_warm_start_keeps_the_model_before_the_call(sparse_data):
    sae = model(warm_start=True).fit(sparse_data)
    before = {k: v.clone() for k, v in sae.module_.state_dict().items()}
    components, curve = sae.components_.copy(), list(sae.loss_curve_)
    with pytest.raises(TrainingDivergedError, match=r"grew to .* times its lowest"):
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


def test_refit_without_early_stopping_drops_stale_validation_scores(sparse_data):
    sae = model(early_stopping=True).fit(sparse_data)
    assert len(sae.validation_scores_) == sae.n_iter_
    sae.set_params(early_stopping=False).fit(sparse_data)
    assert not hasattr(sae, "validation_scores_")


def test_ctrl_c_keeps_the_best_weights_and_warns(
    interrupt, sparse_data, validation_rows
):
    # This learning rate overshoots: epoch 5 scores better than epoch 6.
    with (
        interrupt(epoch=7),
        pytest.warns(RuntimeWarning, match="interrupted after 6 epoch.*best weights"),
    ):
        sae = model(early_stopping=True, max_iter=50, learning_rate=0.1).fit(
            sparse_data
        )
    assert sae.n_iter_ == 6
    scores = sae.validation_scores_
    assert int(np.argmax(scores)) == 4 and scores[-1] < sae.best_validation_score_
    held_out = sparse_data[validation_rows(len(sparse_data))]
    assert sae.score(held_out) == pytest.approx(sae.best_validation_score_, abs=1e-5)


def test_ctrl_c_without_validation_keeps_last_epoch(interrupt, sparse_data):
    with (
        interrupt(epoch=3),
        pytest.warns(RuntimeWarning, match="interrupted after 2 epoch.*last weights"),
    ):
        interrupted = model(max_iter=50).fit(sparse_data)
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


def poison(module) -> None:
    with torch.no_grad():
        module.W_enc.fill_(float("nan"))


def test_failure_after_some_epochs_of_a_warm_fit_leaves_the_model_as_it_was(
    hook, count_epochs, sparse_data
):
    sae = model(warm_start=True).fit(sparse_data)
    codes = sae.transform(sparse_data)
    epochs, modules = count_epochs(), []

    def poisoned_after_epoch_3(state, step):
        if step.last and len(epochs) == 3:
            poison(modules[0])

    hook(train_begin=lambda state, module: modules.append(module))
    hook(step_end=poisoned_after_epoch_3)
    with pytest.raises(
        ValueError, match=r"Training diverged.*NaN or infinite in epoch 3 \(its loss"
    ):
        sae.fit(sparse_data)
    assert len(epochs) == 3
    np.testing.assert_array_equal(sae.transform(sparse_data), codes)


def test_a_blow_up_is_named_with_the_epoch_it_happened_in(hook, sparse_data):
    epochs, modules = [], []

    def blown_up_after_epoch_2(state, step):
        if step.last:
            epochs.append(1)
            if len(epochs) == 2:
                with torch.no_grad():
                    modules[0].W_dec.mul_(1e4)  # finite, a hundredfold loss and more

    hook(train_begin=lambda state, module: modules.append(module))
    hook(step_end=blown_up_after_epoch_2)
    with pytest.raises(TrainingDivergedError, match=r"grew to \S+ in epoch 2, "):
        model(max_iter=5).fit(sparse_data)


def test_ctrl_c_after_the_weights_became_nan_is_a_divergence_not_a_model(
    hook, sparse_data
):
    # Interrupted with no best weights to fall back on and NaN weights: the
    # fit must fail loudly rather than keep a model that answers NaN.
    modules, epochs = [], []

    def poisoned_then_interrupted(state):
        epochs.append(1)
        if len(epochs) == 3:
            poison(modules[0])
            raise KeyboardInterrupt

    hook(train_begin=lambda state, module: modules.append(module))
    hook(epoch_begin=poisoned_then_interrupted)
    sae = model(max_iter=10)
    with pytest.raises(TrainingDivergedError, match="NaN or infinite in epoch 3"):
        sae.fit(sparse_data)
    assert not hasattr(sae, "module_")


def test_running_out_of_epochs_warns_of_convergence(sparse_data):
    sae = KSparseAutoencoder(48, k=3, max_iter=2, random_state=0, **CONSTANT)
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
    sae = KSparseAutoencoder(48, k=3, max_iter=2, random_state=0, **CONSTANT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning):
            sae.fit(sparse_data)
    assert sae.n_features_in_ == sparse_data.shape[1]
    assert sae.activation_frequency_.shape == (48,)
    assert sae.transform(sparse_data).shape == (len(sparse_data), 48)


# ------------------------------------------------------------- divergence

DIVERGING = [
    KSparseAutoencoder(16, k=4),
    L1SparseAutoencoder(16),
    KLSparseAutoencoder(16),
    JumpReLUSparseAutoencoder(16),
    StackedSparseAutoencoder((16, 8)),
    StackedSparseAutoencoder((16, 8), sparsity="topk", k=4),
    ConvSparseAutoencoder(n_components=4, image_shape=(4, 5)),
]


@pytest.fixture(scope="module")
def normal_data():
    return np.random.RandomState(0).randn(200, 20)


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("learning_rate", [10.0, 1e3, 1e6])
@pytest.mark.parametrize("estimator", DIVERGING, ids=lambda e: type(e).__name__)
def test_a_diverging_fit_raises_and_returns_no_model(
    estimator, learning_rate, early_stopping, normal_data
):
    # Each of these returned a model with explained variance from -5 to
    # -1e13 and most latents dead, silently, before divergence was checked.
    sae = clone(estimator).set_params(
        learning_rate=learning_rate,
        max_iter=40,
        n_iter_no_change=3,
        early_stopping=early_stopping,
        random_state=0,
    )
    with pytest.raises(TrainingDivergedError, match=r"lower learning_rate \(now"):
        sae.fit(normal_data)
    assert not hasattr(sae, "module_")


@pytest.mark.parametrize("estimator", DIVERGING, ids=lambda e: type(e).__name__)
def test_a_diverging_refit_leaves_the_fitted_model_as_it_was(estimator, normal_data):
    sae = clone(estimator).set_params(max_iter=3, random_state=0).fit(normal_data)
    state = {k: v.clone() for k, v in sae.module_.state_dict().items()}
    codes, curve = sae.transform(normal_data), list(sae.loss_curve_)
    with pytest.raises(TrainingDivergedError):
        sae.set_params(learning_rate=1e3, max_iter=40).fit(normal_data)
    for name, value in sae.module_.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0, equal_nan=True)
    np.testing.assert_array_equal(sae.transform(normal_data), codes)
    assert sae.loss_curve_ == curve


def test_the_growth_rule_is_relative_to_the_lowest_loss_and_the_start():
    from skae._engine.training import LoopState, check_divergence

    optimizer = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=0.5)
    state = LoopState(start_loss=20.0)
    for epoch, probe in enumerate([1e-9, 1e-10], start=1):
        check_divergence(probe, state, optimizer, epoch)
    assert state.lowest_probe == 1e-10
    # Noise near a perfect fit: a thousand times the lowest, far under the start.
    check_divergence(1e-7, state, optimizer, epoch=3)
    check_divergence(19.0, state, optimizer, epoch=4)
    with pytest.raises(
        TrainingDivergedError, match=r"grew to 25 in epoch 5.*\(now 0.5\)"
    ):
        check_divergence(25.0, state, optimizer, epoch=5)
    # After the first epoch, the start is all there is to compare with.
    first = LoopState(start_loss=20.0)
    check_divergence(1999.0, LoopState(start_loss=20.0), optimizer, epoch=1)
    with pytest.raises(TrainingDivergedError, match="100 times its lowest, 20"):
        check_divergence(2000.1, first, optimizer, epoch=1)
    # A start below 1 (data of small scale) is judged the same way.
    check_divergence(0.01 * 99.9, LoopState(start_loss=0.01), optimizer, epoch=1)
    with pytest.raises(TrainingDivergedError, match=r"grew to 1\.01 in epoch 1"):
        check_divergence(1.01, LoopState(start_loss=0.01), optimizer, epoch=1)
    # A perfect start cannot judge growth; a NaN is divergence all the same.
    check_divergence(5.0, LoopState(start_loss=0.0), optimizer, epoch=1)
    with pytest.raises(TrainingDivergedError, match="loss became nan"):
        check_divergence(float("nan"), LoopState(start_loss=0.0), optimizer, epoch=1)


def test_non_finite_weights_are_named_with_the_loss_they_had():
    from skae._engine.training import check_finite

    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(module.parameters())
    with torch.no_grad():
        module.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDivergedError, match="weights became NaN or infinite"):
        check_finite(3.5, module, optimizer, epoch=2)


def test_every_latent_dead_is_an_error_not_a_model(normal_data):
    # A penalty of 30 per active latent on rows that vary by 20: no latent is
    # worth its cost, and the model would only ever predict the mean.
    sae = JumpReLUSparseAutoencoder(16, sparsity_weight=30.0, max_iter=20)
    with pytest.raises(TrainingDivergedError) as error:
        sae.set_params(random_state=0).fit(normal_data)
    assert not hasattr(sae, "module_")
    message = str(error.value)
    assert "every one of the 16 latents is dead (100% never fire" in message
    # It names the last epoch's loss, the figure a user compares runs by.
    last = re.search(r"last loss ([0-9.e+-]+)\)", message)
    assert last is not None and float(last.group(1)) > 0
    # partial_fit counts activity during its pass: the collapse shows in the
    # first pass that starts with every latent dead, and that pass is undone.
    stream = JumpReLUSparseAutoencoder(16, batch_size=10, random_state=0)
    stream.partial_fit(normal_data).set_params(sparsity_weight=30, learning_rate=0.1)
    for _ in range(10):
        before = {k: v.clone() for k, v in stream.module_.state_dict().items()}
        n_iter = stream.n_iter_
        try:
            stream.partial_fit(normal_data)
        except TrainingDivergedError as exc:
            assert "every one of the 16 latents is dead" in str(exc)
            break
    else:
        pytest.fail("ten passes at a prohibitive penalty never collapsed")
    assert stream.n_iter_ == n_iter
    for name, value in stream.module_.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_no_active_latent_is_right_for_rows_that_do_not_vary():
    X = np.tile(np.arange(6.0), (50, 1))
    sae = KSparseAutoencoder(8, k=2, max_iter=3, random_state=0).fit(X)
    assert sae.n_dead_components_ == 8
    np.testing.assert_allclose(sae.inverse_transform(sae.transform(X)), X, atol=1e-5)


def test_a_fit_worse_than_the_mean_warns():
    # A wide dictionary with many codes per row starts far worse than the
    # mean, and one step does not mend it.
    X = np.random.RandomState(0).randn(100, 8)
    sae = KSparseAutoencoder(512, k=64, max_iter=1, batch_size=100, random_state=0)
    with pytest.warns(
        RuntimeWarning, match=r"explained variance of -\d+.* own training"
    ):
        sae.fit(X)
    assert sae.score(X) < 0


def test_a_fit_better_than_the_mean_does_not_warn(sparse_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sae = model(max_iter=3).fit(sparse_data)
    assert sae.score(sparse_data) > 0


# ------------------------------------------------------- impossible sizes


@pytest.mark.parametrize(
    ("estimator", "named"),
    [
        (KSparseAutoencoder(n_components=10**9, k=4), "n_components=1000000000"),
        (StackedSparseAutoencoder((10**9, 8)), r"hidden_layer_sizes=\(1000000000, 8\)"),
        (ConvSparseAutoencoder(n_components=10**8, image_shape=(4, 5)), "n_components"),
    ],
    ids=["ksparse", "stacked", "conv"],
)
def test_a_model_too_large_for_memory_is_refused_before_allocating(
    estimator, named, normal_data, monkeypatch
):
    # A machine with 24 GiB, whatever this one has.
    monkeypatch.setattr(skae._base, "available_memory", lambda device: 24 * 2**30)
    allocations = []
    monkeypatch.setattr(
        skae._base.BaseSparseAutoencoder,
        "_initial_module",
        lambda *args, **kwargs: allocations.append(1),
    )
    with pytest.raises(
        ValueError, match=rf"{named}.*needs at least [\d.]+ [GT]B .* GB is"
    ):
        estimator.fit(normal_data)
    assert allocations == []


def test_a_batch_too_large_for_memory_names_batch_size(normal_data, monkeypatch):
    monkeypatch.setattr(skae._base, "available_memory", lambda device: 2**20)
    sae = L1SparseAutoencoder(n_components=4096, batch_size=200)
    with pytest.raises(
        ValueError, match=r"one batch's codes.* Lower n_components or batch_size"
    ):
        sae.fit(normal_data)


def test_the_cpu_reports_the_memory_it_has():
    from skae._engine.device import available_memory

    assert 2**20 < available_memory(torch.device("cpu")) < 2**50


# ----------------------------------------------------------- interruption


@pytest.mark.filterwarnings("ignore:.*explained variance")  # 2 epochs of a KL stack
def test_ctrl_c_in_stacked_pretraining_leaves_the_estimator_as_it_was(
    interrupt, normal_data
):
    sae = StackedSparseAutoencoder((8, 4), max_iter=2, random_state=0)
    with interrupt(epoch=2), warnings.catch_warnings():  # in layer 1's pretraining
        warnings.simplefilter("error")  # no promise to keep weights
        with pytest.raises(KeyboardInterrupt, match="pretraining layer 1 of 2"):
            sae.fit(normal_data)
    assert not hasattr(sae, "module_") and not hasattr(sae, "n_features_in_")
    sae.fit(normal_data)
    components = sae.components_.copy()
    with interrupt(epoch=3):  # in the second layer's pretraining
        with pytest.raises(KeyboardInterrupt, match="pretraining layer 2 of 2"):
            sae.fit(normal_data)
    np.testing.assert_array_equal(sae.components_, components)


def test_heavy_tailed_data_is_not_taken_for_divergence():
    # One row in 200 is 300 times larger: batches' losses differ a
    # hundredfold, and only the same rows before and after tell divergence.
    rng = np.random.RandomState(0)
    X = rng.randn(20000, 20).astype(np.float32)
    X[rng.rand(20000) < 0.005] *= 300
    for seed in range(2):
        sae = KSparseAutoencoder(32, k=8, max_iter=3, random_state=seed).fit(X)
        assert sae.loss_curve_[-1] < sae.loss_curve_[0]


def test_partial_fit_on_tiny_chunks_is_not_taken_for_collapse():
    # Four rows say too little about which latents live.
    X = np.random.RandomState(0).randn(400, 20)
    sae = L1SparseAutoencoder(8, alpha=10.0, random_state=0)
    for start in range(0, len(X), 4):
        sae.partial_fit(X[start : start + 4])
    assert sae.n_iter_ == 100


def test_normalize_input_trains_on_data_beyond_the_float32_limit():
    X = np.random.RandomState(0).randn(500, 8) * 3e10
    sae = KSparseAutoencoder(16, k=2, normalize_input=True, max_iter=3, random_state=0)
    assert sae.fit(X).score(X) > 0
    with pytest.raises(ValueError, match="beyond the 1e\\+09"):
        sae.set_params(normalize_input=False).fit(X)


def test_a_loss_equal_to_the_best_is_no_improvement_even_with_tol_0():
    from skae._engine.training import _improved

    assert _improved(5.0, math.inf, 0.1)
    assert _improved(0.99, 1.0, 0.0) and not _improved(1.0, 1.0, 0.0)
    # Relative to the best's size, whatever its sign.
    assert not _improved(0.95, 1.0, 0.1) and _improved(0.89, 1.0, 0.1)
    assert not _improved(-1.05, -1.0, 0.1) and _improved(-1.11, -1.0, 0.1)


def test_callbacks_see_the_loop_state_at_every_event(hook, sparse_data):
    seen = []

    def saw(event):
        return lambda state, *rest: seen.append((event, state.history.n_epochs))

    names = ("train_begin", "epoch_begin", "epoch_end", "train_end")
    hook(**{name: saw(name) for name in names})
    model(max_iter=2).fit(sparse_data)
    assert seen == [
        ("train_begin", 0),
        ("epoch_begin", 0),
        ("epoch_end", 1),
        ("epoch_begin", 1),
        ("epoch_end", 2),
        ("train_end", 2),
    ]


def test_an_adaptive_fit_lowers_its_rate_before_it_stops(sparse_data):
    # A tol no epoch meets, patience 1: each stalled epoch lowers the rate,
    # until a fifth reduction would take it below a thousandth; then it stops.
    sae = model(
        learning_rate_schedule="adaptive",
        tol=0.9,
        n_iter_no_change=1,
        max_iter=50,
        warmup=0.0,
    ).fit(sparse_data)
    assert sae.n_iter_ == 6


def test_the_collapse_and_divergence_errors_say_what_to_do():
    from skae._engine.training import History, all_latents_dead, check_finite

    advice = (
        "lower learning_rate, weaken the sparsity, train longer, or standardize "
        "X (for example with sklearn.preprocessing.StandardScaler)."
    )
    for history, last in ((History(loss=[2.0, 1.5]), "1.5"), (History(), "unknown")):
        assert str(all_latents_dead(16, history)) == (
            "Training collapsed: every one of the 16 latents is dead (100% never "
            f"fire on the training rows; last loss {last}), so the model only "
            "reconstructs the mean. The learning rate or the sparsity is probably "
            "too strong for this data, or training too short: " + advice
        )
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.25)
    with pytest.raises(TrainingDivergedError) as error:
        check_finite(float("nan"), module, optimizer, epoch=4)
    assert str(error.value) == (
        "Training diverged: the loss became nan in epoch 4. The learning rate is "
        "probably too high for this data, or the input is not scaled: lower "
        "learning_rate (now 0.25) or standardize X (for example with "
        "sklearn.preprocessing.StandardScaler)."
    )


def test_adam_falls_back_to_the_unfused_kernel_where_a_device_has_none(monkeypatch):
    real = torch.optim.Adam

    def adam(parameters, lr, fused=None):
        parameters = list(parameters)  # torch reads them before it refuses
        if fused:
            raise RuntimeError("this device has no fused Adam")
        return real(parameters, lr=lr)

    monkeypatch.setattr(torch.optim, "Adam", adam)
    weights = [torch.zeros(3, requires_grad=True), torch.ones(2, requires_grad=True)]
    # A generator, as module.parameters() is: the fallback still gets them all.
    optimizer = skae._engine.training.adam(iter(weights), 0.25)
    (group,) = optimizer.param_groups
    assert group["params"] == weights and group["lr"] == 0.25
    assert not group["fused"]


def test_an_epochs_sums_keep_the_variance_of_rows_far_from_zero():
    """The totals gathered as an epoch trains sum in float64: in float32 the
    sum of squares of rows around 1e4 swamps their variance."""
    from types import SimpleNamespace

    from skae._engine.training import EpochTotals

    class Core:
        def activity_sum(self, codes):
            return codes.sum(dim=0)

    X = 1e4 + np.random.RandomState(0).randn(2000, 3)
    totals = EpochTotals.zeros(width=4, n_features=3, device="cpu")
    for batch in np.split(X.astype(np.float32), 20):
        x = torch.from_numpy(batch)
        out = SimpleNamespace(codes=torch.ones(len(x), 4))
        totals.add(Core(), x, out, error=torch.full((len(x),), 0.5))
    assert totals.rows == 2000
    assert float(totals.error) == 1000.0
    assert totals.activity.tolist() == [2000.0] * 4
    X32 = X.astype(np.float32).astype(np.float64)
    variance = float(totals.squares) - float(totals.col_sum @ totals.col_sum) / 2000
    expected = ((X32 - X32.mean(axis=0)) ** 2).sum()
    assert variance == pytest.approx(expected, rel=1e-6)


def test_an_epochs_loss_is_the_row_weighted_mean_of_its_steps_losses(sparse_data, hook):
    from skae._engine.training import objective

    # 2000 rows in batches of 300: six full steps and one of 200 rows.
    epochs, losses, modules = [[]], [], []

    def step_end(state, step):
        epochs[-1].append((step.rows, float(step.loss_sum)))
        with torch.no_grad():  # the step's batch, scored after the step
            losses.append(float(objective(modules[0], step.x)[0]))
        if step.last:
            epochs.append([])

    hook(train_begin=lambda state, module: modules.append(module), step_end=step_end)
    sae = KSparseAutoencoder(16, k=4, batch_size=300, max_iter=2, tol=0)
    sae.set_params(random_state=0).fit(sparse_data)
    assert epochs.pop() == [] and len(epochs) == 2
    for loss, steps in zip(sae.loss_curve_, epochs, strict=True):
        assert [rows for rows, _ in steps] == [300, 600, 900, 1200, 1500, 1800, 2000]
        rows, loss_sum = steps[-1]
        assert loss == pytest.approx(loss_sum / rows, rel=1e-6)
    # And it is the loss of those rows: near their losses scored just after
    # each step (the weights move during the epoch, by a few percent here).
    weights = [300] * 6 + [200]
    for epoch, loss in enumerate(sae.loss_curve_):
        scored = losses[7 * epoch : 7 * epoch + 7]
        mean = sum(w * s for w, s in zip(weights, scored, strict=True)) / 2000
        assert loss == pytest.approx(mean, rel=0.05)
