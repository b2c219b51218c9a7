"""Learning-rate schedules and the stopping rule: the rate of every step,
the decisions on crafted loss curves, and how fits, resumes and warm starts
follow them."""

import itertools
import logging
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

import skae._base
from skae import KSparseAutoencoder
from skae._engine.training import (
    ADAPTIVE_FACTOR,
    DECAY_FLOOR,
    LoopState,
    Schedule,
    StoppingRule,
    _Loop,
)


@pytest.fixture
def rates(monkeypatch, hook):
    """A list that gains the learning rate of every training step taken
    from then on (as the optimizer holds it when the step begins)."""
    optimizers, seen = [], []
    adam = skae._base.adam

    def recording(parameters, learning_rate):
        optimizers.append(adam(parameters, learning_rate))
        return optimizers[-1]

    monkeypatch.setattr(skae._base, "adam", recording)
    hook(step_begin=lambda state: seen.append(optimizers[-1].param_groups[0]["lr"]))
    return seen


def model(**params):
    defaults = {
        "n_components": 16,
        "k": 4,
        "batch_size": 100,
        "learning_rate": 3e-3,
        "random_state": 0,
    }
    return KSparseAutoencoder(**(defaults | params))


# ----------------------------------------------------------------- shapes


def test_warmup_rises_linearly_to_the_peak():
    schedule = Schedule("constant", peak=2.0, total_steps=100, warmup_steps=4)
    assert [schedule.rate(step) for step in range(6)] == [0.4, 0.8, 1.2, 1.6, 2.0, 2.0]


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_a_decaying_schedule_falls_from_the_peak_to_its_floor(kind):
    schedule = Schedule(kind, peak=1.0, total_steps=50, warmup_steps=10)
    after = [schedule.rate(step) for step in range(10, 50)]
    assert after[0] == 1.0
    assert all(a > b for a, b in itertools.pairwise(after))
    assert after[-1] == pytest.approx(DECAY_FLOOR)
    # Past the planned steps (an epoch longer than estimated), the floor.
    assert schedule.rate(80) == pytest.approx(DECAY_FLOOR)


def test_linear_and_cosine_differ_in_shape_not_ends():
    linear = Schedule("linear", peak=1.0, total_steps=101)
    cosine = Schedule("cosine", peak=1.0, total_steps=101)
    middle = (1 + DECAY_FLOOR) / 2
    assert linear.rate(50) == pytest.approx(middle)
    assert cosine.rate(50) == pytest.approx(middle)
    # A cosine stays high longer, then falls faster.
    assert cosine.rate(25) > linear.rate(25)
    assert cosine.rate(75) < linear.rate(75)


def test_constant_and_adaptive_keep_the_peak_times_the_scale():
    for kind in ("constant", "adaptive"):
        schedule = Schedule(kind, peak=0.5, total_steps=10)
        assert schedule.rate(9) == 0.5
        assert schedule.rate(1000, scale=0.2) == 0.1


def test_only_adaptive_reduces_and_it_runs_out():
    assert Schedule("cosine", 1.0, 10).reduced(1.0) is None
    assert Schedule("constant", 1.0, 10).reduced(1.0) is None
    adaptive = Schedule("adaptive", 1.0, 10)
    scales = [1.0]
    while (scale := adaptive.reduced(scales[-1])) is not None:
        scales.append(scale)
    assert scales == pytest.approx([1.0, 0.2, 0.04, 0.008, 0.0016])


def test_an_unknown_schedule_is_an_error():
    with pytest.raises(ValueError) as error:
        Schedule("exp", 1.0, 10)
    assert str(error.value) == (
        "Unknown learning-rate schedule 'exp'; the schedules are constant, "
        "linear, cosine, adaptive."
    )


def test_the_warmup_of_a_reduced_rate_rises_to_the_reduced_peak():
    # A run resumed with its scale reduced, before its warm-up ended.
    schedule = Schedule("adaptive", peak=1.0, total_steps=100, warmup_steps=4)
    assert schedule.rate(1, scale=0.5) == pytest.approx(0.5 * 2 / 5)


@pytest.mark.parametrize("total_steps", [2, 3, 5])
def test_the_shortest_decaying_runs_still_end_at_the_floor(total_steps):
    for kind in ("linear", "cosine"):
        schedule = Schedule(kind, peak=1.0, total_steps=total_steps)
        assert schedule.rate(0) == 1.0
        assert schedule.rate(total_steps - 1) == pytest.approx(DECAY_FLOOR)


def test_the_scheduler_sets_every_group_to_the_rate_at_the_loops_scale():
    from skae._engine.training import _Scheduler

    weights = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    optimizer = torch.optim.SGD(
        [{"params": weights[:1]}, {"params": weights[1:]}], lr=9.0
    )
    scheduler = _Scheduler(Schedule("adaptive", 0.5, 100), optimizer)
    scheduler.on_step_begin(LoopState(steps=7, rate_scale=0.2))
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(
        [0.1, 0.1]
    )


# ------------------------------------------------- the stopping rule's decisions


def decisions(losses, *, tol=1e-2, patience=2, kind=None):
    """Feed ``losses`` to the loop's judgement as epoch losses; return the
    epoch (from 1) after which it stops, or None, and the rate scales."""
    core = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(core.parameters(), lr=0.1)
    schedule = None if kind is None else Schedule(kind, 0.1, 100)
    loop = _Loop(
        core,
        core,
        optimizer,
        None,
        None,
        StoppingRule(len(losses), tol, patience),
        None,
        (),
        None,
        schedule,
    )
    state, scales = LoopState(), []
    for epoch, loss in enumerate(losses, start=1):
        loop.end_epoch(loss, epoch, state)
        scales.append(state.rate_scale)
        if state.history.converged:
            return epoch, scales
    return None, scales


def test_the_rule_stops_after_patience_epochs_without_relative_progress():
    # 2% then 0.5% and 0.5% better: the last two are below tol=1%.
    losses = [1.0, 0.98, 0.975, 0.97, 0.5]
    assert decisions(losses)[0] == 4


def test_the_rule_judges_progress_relative_to_the_loss_whatever_its_scale():
    losses = [1.0, 0.98, 0.975, 0.97, 0.96, 0.95]
    for scale in (1e-6, 1.0, 1e6):
        assert decisions([loss * scale for loss in losses])[0] == 4


def test_steady_relative_progress_never_stops():
    assert decisions([0.9**n for n in range(30)])[0] is None


def test_adaptive_lowers_the_rate_where_the_rule_would_stop_and_stops_when_spent():
    stalled = [1.0] * 40
    epoch, scales = decisions(stalled, kind="adaptive")
    # Patience 2: epochs 2-3 stall, the rate falls; and again every 2 epochs,
    # until a fifth reduction would take it below a thousandth.
    assert scales[:4] == pytest.approx([1.0, 1.0, 1 / ADAPTIVE_FACTOR, 0.2])
    assert epoch == 11
    assert scales[-1] == pytest.approx(ADAPTIVE_FACTOR**-4)


def test_each_reduction_and_the_stop_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="skae"):
        decisions([1.0] * 40, kind="adaptive")
    messages = [r.getMessage() for r in caplog.records if r.name == "skae"]
    reductions = [
        f"epoch {epoch}: no improvement by tol in 2 epochs; learning rate "
        f"scaled by {ADAPTIVE_FACTOR**-n:g}"
        for n, epoch in enumerate((3, 5, 7, 9), start=1)
    ]
    stop = (
        "stopped after epoch 11: the training loss did not improve by tol=0.01 "
        "of the best in the last 2 epochs"
    )
    assert messages == [*reductions, stop]


# --------------------------------------------------------------- in a fit


@pytest.mark.parametrize(
    ("kind", "warmup"), [("cosine", 0.2), ("linear", 0.0), ("adaptive", 0.1)]
)
def test_every_step_of_a_fit_runs_at_its_scheduled_rate(
    rates, sparse_data, kind, warmup
):
    params = {"learning_rate_schedule": kind, "warmup": warmup, "max_iter": 3}
    model(**params, tol=0, n_iter_no_change=100).fit(sparse_data)
    # 2000 rows in batches of 100: 20 steps an epoch.
    expected = Schedule(kind, 3e-3, 60, warmup_steps=math.floor(warmup * 60))
    assert rates == pytest.approx([expected.rate(step) for step in range(60)])


def test_the_schedule_changes_what_is_learned(sparse_data):
    constant = model(max_iter=3, learning_rate_schedule="constant").fit(sparse_data)
    cosine = model(max_iter=3, learning_rate_schedule="cosine").fit(sparse_data)
    assert not np.array_equal(constant.components_, cosine.components_)


def test_partial_fit_steps_at_the_learning_rate(rates, sparse_data):
    sae = model(learning_rate_schedule="cosine", warmup=0.5, learning_rate=0.01)
    sae.partial_fit(sparse_data).partial_fit(sparse_data)
    assert rates == [0.01] * 40


def test_each_warm_start_fit_runs_a_schedule_of_its_own(rates, sparse_data):
    sae = model(learning_rate_schedule="linear", warmup=0.5, max_iter=1, tol=0)
    sae.set_params(warm_start=True).fit(sparse_data).fit(sparse_data)
    assert len(rates) == 40
    assert rates[20:] == rates[:20]
    assert rates[0] < rates[9] and rates[19] < rates[10]


def test_a_decaying_schedule_ends_at_max_iter_without_a_convergence_warning(
    sparse_data,
):
    params = {"max_iter": 2, "tol": 0, "n_iter_no_change": 100}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        for kind in ("linear", "cosine"):
            model(learning_rate_schedule=kind, **params).fit(sparse_data)
    for kind in ("constant", "adaptive"):
        with pytest.warns(ConvergenceWarning, match="max_iter=2"):
            model(learning_rate_schedule=kind, **params).fit(sparse_data)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"learning_rate_schedule": "exp"}, "learning_rate_schedule"),
        ({"warmup": 1.0}, "warmup"),
        ({"warmup": -0.1}, "warmup"),
    ],
)
def test_bad_schedules_are_refused_before_training(sparse_data, params, message):
    with pytest.raises(ValueError, match=message):
        model(**params).fit(sparse_data)
