"""Watch a fit step by step: every few steps, the loss, L0, FVU and the
share of dead latents, delivered to a callable, the ``skae`` logger or
TensorBoard.

A long fit on activations is judged by these figures as it runs, not by
its final score: whether the reconstruction still improves, whether the
codes hold the sparsity asked for, whether latents are dying. Epoch-level
figures come at the end of a pass, which over a large memmap may be hours
away; :func:`watch` reports every ``every`` optimizer steps instead.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from numbers import Integral
from pathlib import Path

import torch
from sklearn.utils._param_validation import Interval, validate_params
from torch import Tensor, nn

from ._engine.distributed import is_main_process
from ._engine.training import Callback, LoopState, Step, added_callbacks, logger

#: A latent is dead when it has fired on none of this many of the last rows
#: (and of one epoch's rows, where an epoch is shorter), as in the
#: auxiliary loss of :class:`~skae.KSparseAutoencoder`.
DEAD_ROWS = 10_000_000


@dataclass(frozen=True)
class StepMetrics:
    """The figures of one report of :func:`watch`, over the steps since the
    previous report (the window).

    Attributes
    ----------
    step : int
        Optimizer steps taken in the fit so far, counting those before a
        resume from a checkpoint.
    epoch : int
        The epoch the last step belongs to, from 1.
    rows : int
        Training rows in the window.
    loss : float
        The training objective (squared reconstruction error per row plus
        the sparsity penalty), averaged over the window's rows. Each step's
        loss is that of the weights before its update.
    l0 : float
        Mean number of latents active per row in the window; NaN for
        smooth codes (a sigmoid's or a softplus's), which are never exactly
        zero.
    fvu : float
        Fraction of variance unexplained: the window's squared
        reconstruction error over its rows' squared distances to their
        batch's mean. An estimate of ``1 - score`` that needs no pass over
        held-out rows.
    dead_fraction : float
        Share of latents that fired on none of the last rows: the last
        ``dead_rows`` of :func:`watch` (by default one epoch's, at most
        10 million), or all rows seen so far where fewer. NaN for smooth
        codes.

    Examples
    --------
    >>> from skae.monitor import StepMetrics
    >>> StepMetrics(10, 1, 2560, 0.8, 4.0, 0.31, 0.0).as_dict()["fvu"]
    0.31
    """

    step: int
    epoch: int
    rows: int
    loss: float
    l0: float
    fvu: float
    dead_fraction: float

    def as_dict(self) -> dict[str, float]:
        """The figures by name, as a dict."""
        return asdict(self)


@validate_params(
    {
        "receiver": [callable, None],
        "every": [Interval(Integral, 1, None, closed="left")],
        "tensorboard": [str, Path, None],
        "dead_rows": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
@contextlib.contextmanager
def watch(
    receiver: Callable[[StepMetrics], object] | None = None,
    *,
    every: int = 100,
    tensorboard: str | Path | None = None,
    dead_rows: int | None = None,
) -> Iterator[None]:
    """Report the loss, L0, FVU and dead share of every fit inside the
    block, every ``every`` steps.

    Every fit and ``partial_fit`` started inside the block in this thread
    (a Pipeline's or a ``GridSearchCV(n_jobs=1)``'s included) is watched;
    fits in other processes (``n_jobs > 1``) are not. Each report covers
    the steps since the previous one, and the last covers the steps left
    when a fit ends. Watching adds a little work to every step (the
    batch's variance and each latent's firing, on the device); the device
    is waited on only when a report is made. In a distributed fit, only the
    first process reports, on its own rows.

    Parameters
    ----------
    receiver : callable or None, default=None
        Called with each :class:`StepMetrics`. Without a receiver and
        without ``tensorboard``, reports go to the ``skae`` logger at INFO
        level (``logging.basicConfig(level=logging.INFO)`` shows them).
    every : int, default=100
        Optimizer steps between reports. An L-BFGS iteration counts as one
        step.
    tensorboard : str or Path or None, default=None
        A folder to write TensorBoard scalars in (``loss``, ``l0``, ``fvu``,
        ``dead_fraction``, by step), through
        :mod:`torch.utils.tensorboard`; needs the ``tensorboard`` package
        (``pip install skae[tensorboard]``). Each fit writes its own run, a
        new subfolder ``fit-1``, ``fit-2``, ... after any already there:
        nothing is overwritten. ``tensorboard --logdir`` that folder shows
        them.
    dead_rows : int or None, default=None
        A latent is counted dead when it has fired on none of the last
        ``dead_rows`` training rows. None: one epoch's rows, at most 10
        million (before the first epoch ends, the rows seen so far).

    Yields
    ------
    None
        The block's fits are watched.

    Examples
    --------
    >>> import numpy as np
    >>> from skae import KSparseAutoencoder
    >>> from skae.monitor import watch
    >>> X = np.random.RandomState(0).randn(512, 16)
    >>> reports = []
    >>> with watch(reports.append, every=5):
    ...     _ = KSparseAutoencoder(32, k=4, batch_size=64, max_iter=2).fit(X)
    >>> [report.step for report in reports]
    [5, 10, 15, 16]
    >>> reports[-1].l0
    4.0
    """
    if tensorboard is not None:
        _summary_writer_class()  # a missing package fails before any fit
    send = receiver
    if send is None and tensorboard is None:
        send = _log
    with added_callbacks(_Watch(send, every, tensorboard, dead_rows)):
        yield


def _log(metrics: StepMetrics) -> None:
    logger.info(
        "step %d (epoch %d): loss %.6g, L0 %.4g, FVU %.4g, dead %.2f%%",
        metrics.step,
        metrics.epoch,
        metrics.loss,
        metrics.l0,
        metrics.fvu,
        100 * metrics.dead_fraction,
    )


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # tensorboard missing
        raise ImportError(
            "watch(tensorboard=...) writes through torch.utils.tensorboard, which "
            "needs the tensorboard package: pip install tensorboard"
        ) from error
    return SummaryWriter


def _new_run_folder(root: Path) -> Path:
    """The first ``fit-N`` under ``root`` that does not exist yet."""
    root.mkdir(parents=True, exist_ok=True)
    number = 1
    while (root / f"fit-{number}").exists():
        number += 1
    return root / f"fit-{number}"


class _Window:
    """Sums over the steps since the last report, kept on the device."""

    def __init__(self, device: torch.device) -> None:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self.loss, self.sse, self.sst, self.active = (
            zero,
            zero.clone(),
            zero.clone(),
            zero.clone(),
        )
        self.rows, self.steps = 0, 0

    def add(self, x: Tensor, out, activity: Tensor | None) -> None:
        x = x.reshape(len(x), -1)
        error = (
            (out.reconstruction.detach().reshape(len(x), -1) - x)
            .square()
            .sum(dtype=torch.float64)
        )
        centred = x - x.mean(dim=0, dtype=torch.float64).to(x.dtype)
        self.sse = self.sse + error
        self.sst = self.sst + centred.square().sum(dtype=torch.float64)
        penalty = torch.as_tensor(out.penalty).detach().double()
        self.loss = self.loss + error + penalty * len(x)
        if activity is not None:
            self.active = self.active + activity.sum(dtype=torch.float64)
        self.rows += len(x)
        self.steps += 1


class _Watch(Callback):
    """The callback behind :func:`watch`: one per block, reset by each fit."""

    def __init__(
        self, receiver, every: int, tensorboard, dead_rows: int | None
    ) -> None:
        self.receiver, self.every = receiver, every
        self.tensorboard, self.dead_rows = tensorboard, dead_rows

    def on_train_begin(self, state: LoopState, module: nn.Module) -> None:
        self.active = is_main_process()
        if not self.active:
            return
        self.module, self.smooth = module, module.smooth_codes
        device = next(module.parameters()).device
        self.window = _Window(device)
        self.since_fired = torch.zeros(
            module.n_components, dtype=torch.long, device=device
        )
        self.seen = 0
        self.epoch_rows = None
        self.writer = None
        if self.tensorboard is not None:
            folder = _new_run_folder(Path(self.tensorboard))
            self.writer = _summary_writer_class()(log_dir=str(folder))

    def on_step_end(self, state: LoopState, step: Step) -> None:
        if not self.active or step.x is None:
            return
        activity = None
        if not self.smooth:
            with torch.no_grad():
                activity = self.module.activity_sum(step.output.codes.detach())
            self.since_fired.add_(len(step.x)).masked_fill_(activity > 0, 0)
        with torch.no_grad():
            self.window.add(step.x, step.output, activity)
        self.seen += len(step.x)
        self.epoch = state.history.n_epochs + 1
        if step.last and self.epoch_rows is None:
            self.epoch_rows = step.rows
        if state.steps % self.every == 0:
            self.report(state)

    def on_train_end(self, state: LoopState) -> None:
        if not self.active:
            return
        if self.window.steps:
            self.report(state)
        if self.writer is not None:
            self.writer.close()

    def report(self, state: LoopState) -> None:
        window = self.window
        sse, sst, loss, active = (
            float(value)
            for value in (window.sse, window.sst, window.loss, window.active)
        )
        nan = math.nan
        dead = nan
        if not self.smooth:
            limit = self.dead_rows
            if limit is None:
                limit = min(DEAD_ROWS, self.epoch_rows or self.seen)
            dead = float((self.since_fired >= min(limit, self.seen)).double().mean())
        metrics = StepMetrics(
            step=state.steps,
            epoch=self.epoch,
            rows=window.rows,
            loss=loss / window.rows,
            l0=nan if self.smooth else active / window.rows,
            fvu=sse / sst if sst > 0 else (0.0 if sse == 0 else math.inf),
            dead_fraction=dead,
        )
        self.window = _Window(window.loss.device)
        if self.receiver is not None:
            self.receiver(metrics)
        if self.writer is not None:
            for name, value in metrics.as_dict().items():
                if name not in ("step", "epoch", "rows"):
                    self.writer.add_scalar(name, value, metrics.step)
