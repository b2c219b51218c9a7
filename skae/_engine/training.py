"""The training loop: epochs of minibatch steps, early stopping, and the
callbacks through which progress, checkpoints and tests follow it."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .distributed import is_main_process, sum_across, unwrap
from .serialize import storable

if TYPE_CHECKING:
    from .modules import ForwardOutput

Batches = Callable[[], Iterable[Tensor]]

#: skae's logger: the start of a run (device, precision, plan), each
#: epoch's losses (DEBUG), learning-rate reductions, early stops and the
#: epoch whose weights are kept.
logger = logging.getLogger("skae")


class TrainingDivergedError(ValueError):
    """Training diverged: its loss or weights became NaN or infinite, its loss
    grew far past where it started, or every latent died.

    The estimator is left as it was before the call that diverged.

    Examples
    --------
    >>> import numpy as np
    >>> from skae import KSparseAutoencoder, TrainingDivergedError
    >>> X = np.random.RandomState(0).randn(200, 20)
    >>> try:
    ...     KSparseAutoencoder(16, k=4, learning_rate=10, random_state=0).fit(X)
    ... except TrainingDivergedError as exc:
    ...     print("diverged")
    diverged
    """


#: A loss this many times above the lowest seen (and above where the call
#: started) is divergence, not noise.
DIVERGENCE_FACTOR = 100.0

#: The learning-rate schedules, by name (see :class:`Schedule`).
SCHEDULES = ("constant", "linear", "cosine", "adaptive")

#: The share of the peak rate a decaying schedule ends at.
DECAY_FLOOR = 0.1

#: The 'adaptive' schedule divides the rate by this when the loss stalls, as
#: scikit-learn's MLP does, and stops the run once the rate would fall below
#: ``ADAPTIVE_LIMIT`` times its peak.
ADAPTIVE_FACTOR = 5.0
ADAPTIVE_LIMIT = 1e-3


@dataclass(frozen=True)
class Schedule:
    """The learning rate of every step of a run.

    The rate rises linearly over the first ``warmup_steps`` steps, then
    stays at ``peak`` ('constant', and 'adaptive' until the loss stalls) or
    decays to ``floor * peak`` at ``total_steps`` along a straight line
    ('linear') or half a cosine ('cosine'). The rate of a step depends on
    its number alone (and on the scale 'adaptive' has reached), so a run
    resumed at any step follows the same rates.

    Examples
    --------
    >>> from skae._engine.training import Schedule
    >>> schedule = Schedule("cosine", peak=1.0, total_steps=100, warmup_steps=10)
    >>> [round(schedule.rate(step), 3) for step in (0, 9, 10, 55, 99)]
    [0.091, 0.909, 1.0, 0.542, 0.1]
    """

    kind: str
    peak: float
    total_steps: int
    warmup_steps: int = 0
    floor: float = DECAY_FLOOR

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(
                f"Unknown learning-rate schedule {self.kind!r}; the schedules are "
                f"{', '.join(SCHEDULES)}."
            )

    @property
    def decays(self) -> bool:
        """Whether the rate falls over a run planned to last ``total_steps``."""
        return self.kind in ("linear", "cosine")

    def rate(self, step: int, scale: float = 1.0) -> float:
        """The rate of step number ``step`` (from 0), with the 'adaptive'
        schedule's ``scale``."""
        if step < self.warmup_steps:
            return self.peak * scale * (step + 1) / (self.warmup_steps + 1)
        if not self.decays:
            return self.peak * scale
        span = max(1, self.total_steps - 1 - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.peak * (self.floor + (1.0 - self.floor) * shape)

    def reduced(self, scale: float) -> float | None:
        """The 'adaptive' scale after the loss stalled at ``scale``, or None
        when the run should stop (or the schedule does not adapt)."""
        if self.kind != "adaptive":
            return None
        scale = scale / ADAPTIVE_FACTOR
        return scale if scale >= ADAPTIVE_LIMIT else None


@dataclass
class StoppingRule:
    """When to stop: after ``max_epochs``, or when the monitored loss has not
    improved by a relative ``tol`` for ``n_iter_no_change`` epochs in a row."""

    max_epochs: int
    tol: float = 1e-4
    n_iter_no_change: int = 10


@storable
@dataclass
class Evaluation:
    """Loss and explained variance of a module on held-out rows."""

    loss: float
    explained_variance: float


@storable
@dataclass
class History:
    """Per-epoch figures of one call to :func:`train`."""

    loss: list[float] = field(default_factory=list)
    validation: list[Evaluation] = field(default_factory=list)
    converged: bool = False
    interrupted: bool = False

    @property
    def n_epochs(self) -> int:
        return len(self.loss)


@storable
@dataclass
class PartialEpoch:
    """An epoch saved part-way: its steps done, its loss so far, and the
    shuffling stream's state as it began, from which its batches replay."""

    steps: int
    loss_sum: Tensor
    rows: int
    rng_state: tuple | None


@storable
@dataclass
class LoopState:
    """Everything the loop of :func:`train` needs to resume where it stopped.

    ``partial`` is the epoch in progress at the last mid-epoch save (None at
    an epoch's end); ``epoch_rng_state`` is set by the batch source as each
    epoch begins, for ``partial`` to keep. ``start_loss`` and
    ``lowest_probe`` are the loss of the run's probe batch for the model as
    it started and the lowest after any epoch, which divergence is judged
    against (:func:`check_divergence`). ``steps`` counts the steps taken,
    which set the learning rate of a :class:`Schedule`, and ``rate_scale``
    is where an 'adaptive' one has brought it.
    """

    history: History = field(default_factory=History)
    best: float = math.inf
    best_state: dict[str, Tensor] | None = None
    stale_epochs: int = 0
    partial: PartialEpoch | None = None
    epoch_rng_state: tuple | None = None
    start_loss: float = math.nan
    lowest_probe: float = math.inf
    steps: int = 0
    rate_scale: float = 1.0


@dataclass
class EpochTotals:
    """What the steps of one epoch saw, summed on the device: every latent's
    activity, the squared reconstruction error, and the rows' column sums
    and sum of squares (float64), over ``rows`` rows; ``epoch`` is the
    epoch they cover once it is complete (0 before).

    Gathered as the epoch trains, they describe the weights as they moved
    through it, at no cost of a pass of their own.
    """

    activity: Tensor
    error: Tensor
    col_sum: Tensor
    squares: Tensor
    rows: int = 0
    epoch: int = 0

    @classmethod
    def zeros(cls, width: int, n_features: int, device) -> EpochTotals:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        return cls(
            torch.zeros(width, device=device),
            zero,
            torch.zeros(n_features, dtype=torch.float64, device=device),
            zero.clone(),
        )

    def reset(self) -> None:
        for tensor in (self.activity, self.error, self.col_sum, self.squares):
            tensor.zero_()
        self.rows, self.epoch = 0, 0

    @torch.no_grad()
    def add(
        self, core: nn.Module, x: Tensor, out: ForwardOutput, error: Tensor
    ) -> None:
        """Add a step's batch ``x``, the module's output on it and its rows'
        squared errors."""
        self.activity += core.activity_sum(out.codes.detach())
        self.error += error.detach().sum(dtype=torch.float64)
        rows = x.reshape(len(x), -1)
        self.col_sum += rows.sum(dim=0, dtype=torch.float64)
        # Squared in float64: in float32, rows far from zero lose their variance.
        self.squares += torch.linalg.vector_norm(rows, dtype=torch.float64).square()
        self.rows += len(x)


@dataclass
class Step:
    """A step just taken: the epoch's steps, summed row-weighted loss (on the
    device, this process's) and rows so far, whether it was the epoch's
    last, and the step's batch with the forward pass its loss came from."""

    steps: int
    loss_sum: Tensor
    rows: int
    last: bool
    x: Tensor | None = None
    output: ForwardOutput | None = None


class Callback:
    """Hooks into :func:`train`'s loop. Every method does nothing unless a
    subclass says otherwise; each sees the loop's :class:`LoopState`.

    Examples
    --------
    >>> import numpy as np
    >>> from skae import KSparseAutoencoder
    >>> from skae._engine.training import Callback, added_callbacks
    >>> class CountEpochs(Callback):
    ...     epochs = 0
    ...     def on_epoch_end(self, state):
    ...         self.epochs += 1
    >>> counter = CountEpochs()
    >>> X = np.random.RandomState(0).randn(100, 8)
    >>> with added_callbacks(counter):
    ...     _ = KSparseAutoencoder(16, k=2, max_iter=3, tol=0).fit(X)
    >>> counter.epochs
    3
    """

    def on_train_begin(self, state: LoopState, module: nn.Module) -> None:
        """Before the first epoch, with the module the loop trains."""

    def on_epoch_begin(self, state: LoopState) -> None:
        """Before an epoch's first step."""

    def on_step_begin(self, state: LoopState) -> None:
        """Before every training step."""

    def on_step_end(self, state: LoopState, step: Step) -> None:
        """After every training step."""

    def on_epoch_end(self, state: LoopState) -> None:
        """After every completed epoch, its figures in ``state.history``."""

    def on_train_end(self, state: LoopState) -> None:
        """When the loop ends, however it ends."""


_ADDED: contextvars.ContextVar[tuple[Callback, ...]] = contextvars.ContextVar(
    "skae_added_callbacks", default=()
)


@contextlib.contextmanager
def added_callbacks(*callbacks: Callback) -> Iterator[None]:
    """Every training loop started inside the block also calls ``callbacks``
    (after its own), in this thread or task."""
    token = _ADDED.set((*_ADDED.get(), *callbacks))
    try:
        yield
    finally:
        _ADDED.reset(token)


class Progress(Callback):
    """A progress bar of the training rows, so that it moves within an epoch
    (one pass over a large memmap included), with the epoch, its loss and
    the best; a notebook gets tqdm's widget."""

    def __init__(self, epochs: int, epoch_rows: int, description: str) -> None:
        self.epochs, self.epoch_rows, self.description = epochs, epoch_rows, description
        self.bar, self.rows = None, 0

    def on_train_begin(self, state: LoopState, module: nn.Module) -> None:
        from tqdm.auto import tqdm

        done = min(state.history.n_epochs, self.epochs) * self.epoch_rows
        self.rows = 0 if state.partial is None else state.partial.rows
        self.bar = tqdm(
            total=self.epochs * self.epoch_rows,
            initial=done + self.rows,
            desc=self.description,
            unit="row",
            unit_scale=True,
        )

    def on_step_end(self, state: LoopState, step: Step) -> None:
        self.bar.update(max(step.rows - self.rows, 0))
        self.rows = step.rows

    def on_epoch_end(self, state: LoopState) -> None:
        self.rows = 0
        epoch, loss = state.history.n_epochs, state.history.loss[-1]
        postfix = {"epoch": f"{epoch}/{self.epochs}", "loss": f"{loss:.4g}"}
        self.bar.set_postfix(postfix | {"best": f"{state.best:.4g}"})

    def on_train_end(self, state: LoopState) -> None:
        if self.bar is not None:
            self.bar.close()


class _Scheduler(Callback):
    """Sets the optimizer's learning rate before every step."""

    def __init__(self, schedule: Schedule, optimizer: torch.optim.Optimizer) -> None:
        self.schedule, self.optimizer = schedule, optimizer

    def on_step_begin(self, state: LoopState) -> None:
        rate = self.schedule.rate(state.steps, state.rate_scale)
        for group in self.optimizer.param_groups:
            group["lr"] = rate


def adam(parameters: Iterable[Tensor], learning_rate: float) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where the device has one: the
    per-tensor step costs a large share of a wide top-k step on the CPU."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=learning_rate, fused=True)
    except RuntimeError:  # a device without a fused kernel
        return torch.optim.Adam(parameters, lr=learning_rate)


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def objective(module: nn.Module, x: Tensor) -> tuple[Tensor, ForwardOutput, Tensor]:
    """Mean per-row squared reconstruction error plus the sparsity penalty,
    the forward pass it was computed from, and each row's error."""
    out = module(x)
    error = (out.reconstruction - x).square().sum(dim=1)
    return error.mean() + out.penalty, out, error


def train_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Tensor],
    totals: EpochTotals | None = None,
    *,
    resume: PartialEpoch | None = None,
    callbacks: Sequence[Callback] = (),
    state: LoopState | None = None,
) -> Tensor:
    """One pass of minibatch steps; returns the row-weighted mean loss on device.

    Nothing here waits on the device: the loss is accumulated as a tensor and
    read once per epoch by the caller. When ``totals`` is given, each step's
    figures are added to it. ``resume`` continues an epoch saved
    part-way (``batches`` then holds only the batches it had left).
    ``callbacks`` are called, with ``state``, before and after every step.
    """
    module.train()
    core = unwrap(module)
    total = None if resume is None else resume.loss_sum.clone()
    n_rows = 0 if resume is None else resume.rows
    steps = 0 if resume is None else resume.steps
    iterator = iter(batches)
    x = next(iterator, None)
    while x is not None:
        for callback in callbacks:
            callback.on_step_begin(state)
        loss, out, error = objective(module, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        core.before_step()
        optimizer.step()
        core.after_step()
        weighted = loss.detach() * x.shape[0]
        total = weighted if total is None else total + weighted
        n_rows += x.shape[0]
        steps += 1
        if state is not None:
            state.steps += 1
        if totals is not None:
            totals.add(core, x, out, error)
        done, x = x, next(iterator, None)
        for callback in callbacks:
            step = Step(steps, total, n_rows, x is None, done, out)
            callback.on_step_end(state, step)
    if total is None:
        raise ValueError("No training rows: the epoch had no batches.")
    # Every process reports the loss over all processes' rows, so that all
    # take the same stopping decisions.
    rows = total.new_tensor(float(n_rows))
    return sum_across(total) / sum_across(rows)


def lbfgs(parameters: Iterable[Tensor]) -> torch.optim.LBFGS:
    """L-BFGS with a strong-Wolfe line search, one iteration a call of
    ``step`` (the loop judges every iteration as an epoch); it only stops
    early by itself where the gradient vanishes."""
    return torch.optim.LBFGS(
        list(parameters),
        lr=1.0,
        max_iter=1,
        max_eval=LBFGS_EVALUATIONS,
        history_size=LBFGS_HISTORY,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )


#: Memory of the L-BFGS solver (pairs of steps and gradient changes), and
#: the most loss evaluations one iteration's line search may make.
LBFGS_HISTORY = 20
LBFGS_EVALUATIONS = 25


def lbfgs_iteration(
    module: nn.Module,
    optimizer: torch.optim.LBFGS,
    batches: Iterable[Tensor],
    totals: EpochTotals | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    state: LoopState | None = None,
) -> Tensor:
    """One L-BFGS iteration on the whole of the training rows (``batches``
    holds them as one batch: the loss of a quasi-Newton step must be the
    same function at every evaluation); returns the loss after it, whose
    figures ``totals``, when given, receives."""
    module.train()
    (x,) = batches
    for callback in callbacks:
        callback.on_step_begin(state)

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = objective(module, x)[0]
        loss.backward()
        return loss

    optimizer.step(closure)
    if state is not None:
        state.steps += 1
    with torch.no_grad():
        loss, out, error = objective(module, x)
    if totals is not None:
        totals.add(unwrap(module), x, out, error)
    for callback in callbacks:
        step = Step(1, loss * x.shape[0], x.shape[0], True, x, out)
        callback.on_step_end(state, step)
    return loss


@torch.no_grad()
def evaluate(module: nn.Module, batches: Iterable[Tensor]) -> Evaluation:
    """Objective and explained variance over all rows of ``batches``."""
    module.eval()
    loss_sum = sse = sum_sq = 0.0
    col_sum = None
    n_rows = 0
    for x in batches:
        out = module(x)
        err = (out.reconstruction - x).square().sum(dim=1).double()
        sse = sse + err.sum()
        loss_sum = loss_sum + err.sum() + out.penalty.double() * x.shape[0]
        xd = x.double()
        col_sum = xd.sum(dim=0) if col_sum is None else col_sum + xd.sum(dim=0)
        sum_sq = sum_sq + xd.square().sum()
        n_rows += x.shape[0]
    sst = float(sum_sq - col_sum.square().sum() / n_rows)
    sse = float(sse)
    ev = 1.0 - sse / sst if sst > 0 else float(sse == 0.0)
    return Evaluation(loss=float(loss_sum) / n_rows, explained_variance=ev)


def _improved(value: float, best: float, tol: float) -> bool:
    """Better than ``best`` by a relative ``tol`` (any finite value beats inf)."""
    return math.isinf(best) or value < best - tol * abs(best)


def is_finite(module: nn.Module) -> bool:
    """True when every parameter of ``module`` is finite (one device sync)."""
    checks = [torch.isfinite(p).all() for p in module.parameters()]
    return bool(torch.stack(checks).all())


def _diverged(what: str, optimizer: torch.optim.Optimizer) -> TrainingDivergedError:
    rate = optimizer.param_groups[0]["lr"]
    return TrainingDivergedError(
        f"Training diverged: {what}. The learning rate is probably too high for "
        f"this data, or the input is not scaled: lower learning_rate (now "
        f"{rate:g}) or standardize X (for example with "
        "sklearn.preprocessing.StandardScaler)."
    )


@torch.no_grad()
def probe_loss(module: nn.Module, probe: Tensor) -> float:
    """The objective on the probe batch, summed over all processes."""
    module.eval()
    loss = objective(module, probe)[0]
    return float(sum_across(loss.detach().double()))


def check_finite(
    loss: float, module: nn.Module, optimizer: torch.optim.Optimizer, epoch: int
) -> None:
    """Raise :class:`TrainingDivergedError` if the loss or the weights are
    NaN or infinite."""
    if not math.isfinite(loss):
        raise _diverged(f"the loss became {loss} in epoch {epoch}", optimizer)
    if not is_finite(module):
        raise _diverged(
            f"the weights became NaN or infinite in epoch {epoch} (its loss was "
            f"{loss:.4g})",
            optimizer,
        )


def check_divergence(
    probe: float, state: LoopState, optimizer: torch.optim.Optimizer, epoch: int
) -> None:
    """Raise :class:`TrainingDivergedError` if the loss on the probe batch
    after ``epoch`` is :data:`DIVERGENCE_FACTOR` times its lowest (the start
    included) and above the start, and record it.

    The probe batch is the same rows before training and after every epoch:
    unlike losses over different batches, which heavy-tailed data make vary
    a hundredfold, its loss only grows that much when training diverges.
    """
    start = state.start_loss
    if not math.isfinite(probe):
        raise _diverged(f"the loss became {probe} in epoch {epoch}", optimizer)
    lowest = min(start, state.lowest_probe)
    # A start of 0 is a perfect fit that rounding noise cannot be judged by.
    if start > 0 and probe > max(DIVERGENCE_FACTOR * lowest, start):
        raise _diverged(
            f"the loss on a fixed batch grew to {probe:.4g} in epoch {epoch}, "
            f"{probe / lowest:.3g} times its lowest, {lowest:.4g} (it started at "
            f"{start:.4g})",
            optimizer,
        )
    state.lowest_probe = min(state.lowest_probe, probe)


def all_latents_dead(n_components: int, history: History) -> TrainingDivergedError:
    """The error for a model none of whose latents fires on its training rows."""
    last = f"{history.loss[-1]:.4g}" if history.loss else "unknown"
    return TrainingDivergedError(
        f"Training collapsed: every one of the {n_components} latents is dead "
        f"(100% never fire on the training rows; last loss {last}), so the model "
        "only reconstructs the mean. The learning rate or the sparsity is "
        "probably too strong for this data, or training too short: lower "
        "learning_rate, weaken the sparsity, train longer, or standardize X "
        "(for example with sklearn.preprocessing.StandardScaler)."
    )


def record_partial_epoch(
    state: LoopState, step: Step, module: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Set ``state.partial`` to the epoch in progress after ``step``, its loss
    over every process (a collective: every process must call this at the
    same step), and raise :class:`TrainingDivergedError` if that loss or the
    weights are not finite."""
    loss_sum = sum_across(step.loss_sum.detach().clone())
    rows = int(sum_across(loss_sum.new_tensor(float(step.rows))))
    epoch = state.history.n_epochs + 1
    check_finite(float(loss_sum) / rows, unwrap(module), optimizer, epoch)
    state.partial = PartialEpoch(step.steps, loss_sum, rows, state.epoch_rng_state)


def train(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_batches: Batches,
    rule: StoppingRule,
    *,
    validation_batches: Batches | None = None,
    totals: EpochTotals | None = None,
    state: LoopState | None = None,
    callbacks: Sequence[Callback] = (),
    probe: Tensor | None = None,
    schedule: Schedule | None = None,
) -> History:
    """Train ``module`` in place until ``rule`` says stop.

    With ``validation_batches`` the loss on those rows is monitored and the
    module ends with the weights of its best validation epoch; without, the
    training loss is monitored and the last weights are kept. As in
    scikit-learn's MLP, ``tol`` only decides when to stop: the best epoch is
    the one with the lowest monitored loss. Ctrl-C stops training cleanly,
    keeping the weights a normal stop would keep, and sets
    ``history.interrupted`` for the caller to report. An epoch whose loss or
    weights are not finite, or after which the loss on the ``probe`` batch
    has grown a hundredfold (:func:`check_divergence`), raises
    :class:`TrainingDivergedError`, leaving the module's weights undefined:
    the caller restores or discards them.

    ``totals``, when given, holds the figures of the last complete epoch
    (or of the epoch in progress when training stops in it: its ``epoch``
    then stays 0). ``state``, updated in place, may hold a loop saved
    earlier to continue it (its module and optimizer already restored). A
    state saved part-way through an epoch resumes at its next step:
    ``train_batches`` must then replay the epoch's batches from
    ``state.partial.rng_state``, and the steps already done are skipped.
    ``callbacks``, and those of any enclosing :func:`added_callbacks`, see
    the loop's epochs and steps. ``schedule`` sets the learning rate of
    every step (without, the optimizer's own rate is kept); an 'adaptive'
    one lowers it where the rule would stop, and stops once it is spent.
    """
    state = LoopState() if state is None else state
    own = () if schedule is None else (_Scheduler(schedule, optimizer),)
    loop = _Loop(
        module,
        unwrap(module),
        optimizer,
        train_batches,
        validation_batches,
        rule,
        totals,
        (*own, *callbacks, *_ADDED.get()),
        probe,
        schedule,
    )
    if probe is not None and math.isnan(state.start_loss):
        state.start_loss = probe_loss(loop.core, probe)
    history = state.history
    for callback in loop.callbacks:
        callback.on_train_begin(state, loop.core)
    try:
        # A resumed loop that had already converged runs no more epochs.
        last = history.n_epochs if history.converged else rule.max_epochs
        for epoch in range(history.n_epochs + 1, last + 1):
            loop.run_epoch(epoch, state)
            if history.converged:
                break
    except KeyboardInterrupt:
        history.interrupted = True
        if state.best_state is None and not is_finite(loop.core):
            what = f"the weights became NaN or infinite in epoch {history.n_epochs + 1}"
            raise _diverged(what, optimizer) from None
    finally:
        for callback in loop.callbacks:
            callback.on_train_end(state)
    if state.best_state is not None:
        loop.core.load_state_dict(state.best_state)
        logger.info(
            "kept the weights of epoch %d, the best on validation", kept_epoch(state)
        )
    return history


def kept_epoch(state: LoopState) -> int:
    """The epoch whose weights :func:`train` ends with: the best on
    validation where it monitors validation, else the last."""
    if state.best_state is None:
        return state.history.n_epochs
    losses = [evaluation.loss for evaluation in state.history.validation]
    return losses.index(min(losses)) + 1


@dataclass
class _Loop:
    """The fixed parts of one call of :func:`train`."""

    module: nn.Module  # as trained: a DistributedDataParallel wrapper, or core
    core: nn.Module
    optimizer: torch.optim.Optimizer
    train_batches: Batches
    validation_batches: Batches | None
    rule: StoppingRule
    totals: EpochTotals | None
    callbacks: tuple[Callback, ...]
    probe: Tensor | None
    schedule: Schedule | None

    def run_epoch(self, epoch: int, state: LoopState) -> None:
        """Train epoch number ``epoch`` and judge it."""
        for callback in self.callbacks:
            callback.on_epoch_begin(state)
        batches, resume = _epoch_batches(self.train_batches, state.partial)
        if self.totals is not None:
            self.totals.reset()
        if isinstance(self.optimizer, torch.optim.LBFGS):
            loss = lbfgs_iteration(
                self.module,
                self.optimizer,
                batches,
                self.totals,
                callbacks=self.callbacks,
                state=state,
            )
        else:
            loss = train_epoch(
                self.module,
                self.optimizer,
                batches,
                self.totals,
                resume=resume,
                callbacks=self.callbacks,
                state=state,
            )
        if self.totals is not None and resume is None:
            self.totals.epoch = epoch
        state.partial = None
        self.end_epoch(float(loss), epoch, state)
        for callback in self.callbacks:
            callback.on_epoch_end(state)

    def end_epoch(self, loss: float, epoch: int, state: LoopState) -> None:
        """Judge the epoch just trained: divergence, the monitored loss, the
        best weights so far, and whether training has converged."""
        core, optimizer = self.core, self.optimizer
        check_finite(loss, core, optimizer, epoch)
        if self.probe is not None:
            check_divergence(probe_loss(core, self.probe), state, optimizer, epoch)
        history = state.history
        history.loss.append(loss)
        monitored = loss
        if self.validation_batches is not None:
            evaluation = evaluate(core, self.validation_batches())
            history.validation.append(evaluation)
            monitored = evaluation.loss
        improved = _improved(monitored, state.best, self.rule.tol)
        state.stale_epochs = 0 if improved else state.stale_epochs + 1
        if monitored < state.best:
            state.best = monitored
            if self.validation_batches is not None:
                state.best_state = snapshot(core)
        logger.debug(
            "epoch %d: loss %.6g, monitored %.6g, best %.6g",
            epoch,
            loss,
            monitored,
            state.best,
        )
        converged = state.stale_epochs >= self.rule.n_iter_no_change
        if converged and self.schedule is not None:
            # 'adaptive' lowers the rate where the rule would stop.
            scale = self.schedule.reduced(state.rate_scale)
            if scale is not None:
                state.rate_scale, state.stale_epochs, converged = scale, 0, False
                logger.info(
                    "epoch %d: no improvement by tol in %d epochs; learning rate "
                    "scaled by %g",
                    epoch,
                    self.rule.n_iter_no_change,
                    scale,
                )
        if converged:
            logger.info(
                "stopped after epoch %d: the %s loss did not improve by tol=%g "
                "of the best in the last %d epochs",
                epoch,
                "validation" if self.validation_batches is not None else "training",
                self.rule.tol,
                self.rule.n_iter_no_change,
            )
        history.converged = converged


def _epoch_batches(
    train_batches: Batches, partial: PartialEpoch | None
) -> tuple[Iterable[Tensor], PartialEpoch | None]:
    """The batches of the next epoch, and the part of it already done: those
    of an epoch saved part-way skip the steps it had taken."""
    batches = train_batches()
    if partial is None:
        return batches, None
    batches = itertools.islice(batches, partial.steps, None)
    if not is_main_process():
        # The saved loss is every process's: rank 0 carries it on.
        partial = PartialEpoch(partial.steps, partial.loss_sum * 0, 0, None)
    return batches, partial
