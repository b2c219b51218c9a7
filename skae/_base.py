"""BaseSparseAutoencoder: the scikit-learn contract shared by every estimator."""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import mmap
import os
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._engine.checkpoint import (
    Checkpoint,
    data_fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from ._engine.data import (
    RowSource,
    all_rows,
    column_sums,
    iter_batches,
    scan_values,
    sequential_chunks,
)
from ._engine.device import (
    available_memory,
    cpu_copy,
    inference_device,
    limited_threads,
    module_copy,
    resolve_device,
)
from ._engine.distributed import (
    current_world,
    is_main_process,
    parallel,
    release_parallel,
    sum_across,
)
from ._engine.files import check_writable_folder
from ._engine.precision import PRECISIONS, products_in, resolve_precision
from ._engine.rules import Rule
from ._engine.serialize import module_state, restore_module
from ._engine.training import (
    LBFGS_HISTORY,
    SCHEDULES,
    Callback,
    EpochTotals,
    LoopState,
    Progress,
    Schedule,
    StoppingRule,
    adam,
    all_latents_dead,
    kept_epoch,
    lbfgs,
    logger,
    record_partial_epoch,
    snapshot,
    train,
)
from ._rules import KINDS, Kind

_FLOATS = (np.float64, np.float32)

#: Largest magnitude of training data: skae trains in float32, where the
#: squares of gradients (which grow with the square of the data) that Adam
#: keeps overflow for data of about 1e11, and training degrades silently.
TRAINING_MAGNITUDE_LIMIT = 1e9
#: Longest name of an estimator on a progress bar or in a log line.
SHORT_NAME_LENGTH = 60
#: Activations of an inference batch (rows times the widest layer), unless
#: ``batch_size`` is larger.
INFERENCE_ELEMENTS = 2**22
#: Most rows of the probe batch, whose loss before training and after every
#: epoch tells divergence from noise. They are the same rows each time, so
#: more of them would not steady that judgement, only cost more: a probe as
#: large as a wide batch is a forward pass of that batch every epoch.
PROBE_ROWS = 256


class _Outcome(NamedTuple):
    """What one training call reports back to ``fit``."""

    history: object
    max_epochs: int
    explained_variance: float | None  # on the training rows, after training


@dataclass
class _Run:
    """What one training call decided before building its module."""

    rng: np.random.RandomState
    device: torch.device
    source: RowSource
    split: tuple  # all training rows and the validation rows (or None)
    train_rows: object  # this process's share of the training rows
    rule: StoppingRule
    single_pass: bool  # partial_fit's one pass
    resumed: Checkpoint | None
    loop: LoopState
    schedule: Schedule | None  # None for partial_fit's one pass
    checkpoint_file: Path | None  # None when this call writes none
    fingerprint: dict | None
    totals: EpochTotals | None = None  # what the last epoch's steps saw
    sums: tuple | None = None  # column sums, squares and count of all rows


class _KeptState:
    """A fitted module's weights and settings, to put back if a call that
    continues it fails."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.attributes = _plain_attributes(module)
        self.state = snapshot(module)

    def restore(self) -> None:
        self.module.load_state_dict(self.state)
        for submodule, attributes in self.attributes:
            vars(submodule).update(attributes)


class _Checkpointer(Callback):
    """Writes a run's checkpoints: every ``checkpoint_interval`` epochs, or
    that share of an epoch's steps apart, and after the last epoch."""

    def __init__(self, estimator, run: _Run, module, optimizer) -> None:
        self.run, self.module, self.optimizer = run, module, optimizer
        self.interval = estimator.checkpoint_interval
        self.step_interval = estimator._checkpoint_steps(len(run.train_rows))

    def on_step_end(self, state: LoopState, step) -> None:
        if not self.step_interval or step.last or step.steps % self.step_interval:
            return
        record_partial_epoch(state, step, self.module, self.optimizer)
        self.on_epoch_end(state)

    def on_epoch_end(self, state: LoopState) -> None:
        epochs = state.history.n_epochs
        last = state.history.converged or epochs >= self.run.rule.max_epochs
        if not is_main_process():
            return
        due = state.partial is not None or self.interval < 1
        if not (due or last or epochs % self.interval == 0):
            return
        checkpoint = Checkpoint(
            module_state(self.module),
            self.optimizer.state_dict(),
            state,
            self.run.rng,
            self.run.split,
            self.run.fingerprint,
        )
        path = self.run.checkpoint_file
        try:
            save_checkpoint(path, checkpoint)
        except (OSError, RuntimeError) as exc:
            # A full disk should not end a long run: warn, go on.
            warnings.warn(
                f"Could not write the checkpoint after epoch {epochs} to "
                f"{str(path)!r}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )


#: The constraint of the ``solver`` parameter, where an estimator has one.
SOLVER_CONSTRAINTS = {"solver": [StrOptions({"adam", "lbfgs"})]}

#: The constraints of the one-layer estimators' dictionary parameters.
DICTIONARY_CONSTRAINTS = {
    "dictionary": [StrOptions({"free", "archetypal"})],
    "relaxation": [Interval(Real, 0, None, closed="left")],
}


def _n_archetypes(n_components: int) -> int:
    """Rows whose relaxed hull holds an archetypal dictionary: four per
    atom, at most 8192 (and never fewer than the atoms)."""
    return max(n_components, min(4 * n_components, 8192))


def _spread_rows(source, rows, n: int) -> torch.Tensor:
    """``n`` of ``rows`` spread evenly through them in order (repeated when
    there are fewer), dense, as float32: the same rows whatever the seed."""
    positions = np.linspace(0, len(rows) - 1, n).round().astype(np.int64)
    picked, seen = [], 0
    for chunk in rows.ordered(max(1, len(rows) // 64)):
        inside = positions[(positions >= seen) & (positions < seen + len(chunk))]
        picked.append(chunk[inside - seen])
        seen += len(chunk)
    indices = np.concatenate(picked)
    unique, inverse = np.unique(indices, return_inverse=True)
    block = source.read(unique)
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return torch.from_numpy(block[inverse].astype(np.float32))


def _sums(source, rows) -> tuple:
    """Column sums, sum of squares and count of ``rows``, over all processes."""
    col_sum, squares, n = column_sums(source, rows)
    totals = sum_across(torch.tensor([*col_sum, squares, n], dtype=torch.float64))
    return totals[:-2].numpy(), float(totals[-2]), int(totals[-1])


def _encode(module, x):
    return module.encode(x)


def _encode_into(module, x, out) -> None:
    module.encode_into(x, out)


#: The torch dtype of each output dtype.
_TORCH = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def _training_sums(run: _Run) -> tuple:
    """Column sums, sum of squares and count of the training rows, over all
    processes: from those of all rows that validation gathered, less the
    held-out rows' (read alone), where one process trains on them all."""
    held_out = run.split[1]
    if run.sums is None or current_world() is not None:
        return _sums(run.source, run.train_rows)
    col_sum, squares, n = run.sums
    if held_out is None:
        return run.sums
    held_sum, held_squares, held_n = column_sums(run.source, held_out)
    return col_sum - held_sum, squares - held_squares, n - held_n


def _summed_totals(totals: EpochTotals) -> tuple[float, tuple]:
    """The squared error of an epoch's steps and their rows' column sums, sum
    of squares and count, over all processes, as :meth:`_measure` gives them."""
    packed = torch.cat(
        [
            totals.col_sum,
            torch.stack([totals.squares, totals.error]),
            totals.error.new_tensor([float(totals.rows)]),
        ]
    )
    packed = sum_across(packed).cpu().numpy()
    return float(packed[-2]), (packed[:-3], float(packed[-3]), int(packed[-1]))


def _explained_variance(error: float, sums: tuple) -> float:
    """``1 - error / total variance`` of rows with these sums (1 or 0 for
    rows that do not vary, as the error is or is not 0)."""
    col_sum, squares, n = sums
    total = squares - float(col_sum @ col_sum) / n
    return 1.0 - error / total if total > 0 else float(error == 0.0)


def _varies(sums: tuple) -> bool:
    """Whether rows with these sums differ beyond rounding: if not, their
    mean reconstructs them, and a model with no active latent is right."""
    col_sum, squares, n = sums
    return squares - float(col_sum @ col_sum) / n > 1e-6 * squares


def _size(n_bytes: float) -> str:
    """``n_bytes`` for a person: 3.2 GB, 1.04 TB, 40 kB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes:.0f} bytes"


def _difference(key: str, saved, now) -> str:
    """One line of what differs between a checkpoint's run and this one."""
    if key == "data_sample":
        return "data: other rows of the same shape (their sampled rows differ)"
    return f"{key}: {saved!r} saved, {now!r} now"


def _ran_out_of_epochs(history, max_epochs: int) -> bool:
    """Whether training ran all its epochs with the loss still improving,
    which scikit-learn's iterative estimators report as a ConvergenceWarning."""
    finished = history.converged or history.interrupted
    return not finished and max_epochs > 0 and history.n_epochs >= max_epochs


def _solver_of(optimizer_state: dict) -> str:
    """The solver whose ``state_dict`` this is."""
    groups = optimizer_state.get("param_groups") or [{}]
    return "lbfgs" if "line_search_fn" in groups[0] else "adam"


def _map_pages(array: np.ndarray) -> None:
    """Have the kernel map every page of a fresh, zeroed ``array`` now, by
    writing a zero into each from torch's threads.

    A scattered fill (a few codes a row) otherwise takes the page faults
    one by one, each batch on one thread, which costs most where other
    allocations came between (``benchmarks/run.py --only transform``).
    The array then holds all of its memory, as a dense result should,
    even where a fill of very wide, very sparse rows would have left some
    pages untouched.
    """
    step = max(1, mmap.PAGESIZE // array.itemsize)
    torch.from_numpy(array.reshape(-1))[::step].zero_()


def _output_dtype(dtype: np.dtype) -> type:
    """float32 for float32 data of any byte order, else float64."""
    dtype = np.dtype(dtype)
    return np.float32 if dtype.kind == "f" and dtype.itemsize == 4 else np.float64


class BaseSparseAutoencoder(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Base class for skae's sparse autoencoders. Not for direct use.

    It owns everything a scikit-learn transformer must do: parameter and data
    validation, fit / partial_fit / warm start, batched transform and
    inverse_transform, scores, persistence across devices. A subclass declares
    its own parameters and constraints, and builds its torch module in
    :meth:`_make_module`; it may check parameter combinations in
    :meth:`_check_params`.

    Examples
    --------
    >>> from skae import BaseSparseAutoencoder, KSparseAutoencoder
    >>> issubclass(KSparseAutoencoder, BaseSparseAutoencoder)
    True
    """

    #: skae's estimator classes by name, the only ones a model file may name:
    #: every subclass that a module of skae defines adds itself.
    _skae_estimators: dict[str, type] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("skae."):
            BaseSparseAutoencoder._skae_estimators[cls.__name__] = cls

    _parameter_constraints: dict = {
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "learning_rate_schedule": [StrOptions(set(SCHEDULES))],
        "warmup": [Interval(Real, 0, 1, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "warm_start": ["boolean"],
        "device": [str, torch.device],
        "precision": [StrOptions(set(PRECISIONS))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "checkpoint_path": [str, os.PathLike, None],
        "checkpoint_interval": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Real, 0, 1, closed="neither"),
        ],
    }

    def _store_params(self, params: dict) -> None:
        """Store ``__init__``'s arguments unchanged, as scikit-learn requires.

        Subclasses list every parameter in their own ``__init__`` signature
        (``get_params`` reads it) and call ``self._store_params(locals())``.
        """
        for name, value in params.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    # ------------------------------------------------------------------ hooks

    #: Parameters that say how long, where, in what precision or in what
    #: form a run works, not what it learns: a checkpoint resumes across
    #: changes of these.
    _run_free_parameters = frozenset(
        {
            "max_iter",
            "tol",
            "n_iter_no_change",
            "device",
            "precision",
            "verbose",
            "warm_start",
            "checkpoint_path",
            "checkpoint_interval",
        }
    )

    #: The sparsity kind of a one-layer estimator: a name in
    #: :data:`skae._rules.KINDS`.
    _sparsity_kind: str = ""

    def _kind(self) -> Kind:
        """The sparsity kind whose rule and layers this estimator builds."""
        return KINDS[self._sparsity_kind]

    def _settings(self) -> dict:
        """The values the kind reads for the rule and the module, by name."""
        return self.get_params(deep=False)

    def _rule(self) -> Rule:
        """The sparsity rule these parameters ask for."""
        return self._kind().rule(self._settings())

    def _make_module(
        self, n_features: int, mean: torch.Tensor, generator: torch.Generator
    ) -> torch.nn.Module:
        """The untrained torch module for data with ``n_features`` columns,
        whose input mean is ``mean``."""
        return self._kind().layer(
            self._rule(),
            n_features,
            self.n_components,
            mean,
            generator,
            self._settings(),
        )

    def _empty_module(self, n_features: int) -> torch.nn.Module:
        """A module of the shape these parameters give for ``n_features``
        inputs, on the meta device, for saved weights to fill: building it
        allocates nothing, whatever size a file claims."""
        with torch.device("meta"):
            return self._module_skeleton(n_features)

    def _module_skeleton(self, n_features: int) -> torch.nn.Module:
        """A module of the shape these parameters give for ``n_features``
        inputs (its weights are arbitrary)."""
        generator = torch.Generator()
        module = self._make_module(n_features, torch.zeros(n_features), generator)
        if self._dictionary() == "archetypal":
            self._shape_dictionary(module, None, generator)
        return module

    def _reject_booleans(self) -> None:
        """Refuse ``True`` or ``False`` where a number is expected, alone or in
        a sequence: scikit-learn's intervals take them for 1 and 0."""
        for name, constraints in self._parameter_constraints.items():
            if "boolean" in constraints or "verbose" in constraints:
                continue
            value = getattr(self, name)
            if any(isinstance(item, (bool, np.bool_)) for item in _items(value)):
                raise TypeError(
                    f"{name}={value!r} holds a boolean where "
                    f"{type(self).__name__} needs a number."
                )

    def _check_params(self) -> None:
        """Check parameter combinations that constraints cannot express."""

    def _update_module(self, module: torch.nn.Module) -> None:
        """Apply parameters changed since the last fit before training on:
        ``warm_start`` and ``partial_fit`` continue the fitted module, with
        the rule and settings the parameters now give."""
        self._kind().update(module, self._rule(), self._settings())

    def _architecture(self) -> dict:
        """The parameters that fix the module's shape, by name."""
        shape = {"n_components": self.n_components}
        if "dictionary" in self.get_params(deep=False):
            shape["dictionary"] = self.dictionary
        return shape

    def _check_incremental(self) -> None:
        for name, value in self._architecture().items():
            fitted = self._fitted_architecture[name]
            if value != fitted:
                raise ValueError(
                    f"{name}={value!r} differs from the fitted model's {fitted!r}: "
                    "warm_start and partial_fit continue the fitted model and "
                    "cannot change its shape. Fit with warm_start=False to start "
                    "afresh."
                )

    # -------------------------------------------------------------- fitting

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the autoencoder on X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data. A numpy memmap is streamed from disk chunk by
            chunk; a sparse matrix is densified one batch at a time.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        warm = self.warm_start and hasattr(self, "module_")
        self._reject_booleans()
        self._check_params()
        if warm:
            self._check_incremental()
        with self._input_metadata_kept_on_failure():
            sums = []
            X = self._validate_X(X, reset=not warm, for_training=True, sums=sums)
            outcome = self._train(X, incremental=warm, sums=sums[0])
        # Last, once the estimator is whole: an error raised from it by a
        # warnings filter leaves a fitted model, not a half-updated one.
        score = outcome.explained_variance
        if score is not None and score < 0:
            warnings.warn(
                f"{type(self).__name__} ended with an explained variance of "
                f"{score:.4g} on its own training data: it reconstructs X worse "
                "than X's mean does. Lower learning_rate, standardize X, or "
                "train longer (warm_start=True continues this model).",
                RuntimeWarning,
                stacklevel=3,
            )
        # A decaying schedule plans the run to end at max_iter.
        decays = self._solver() == "adam" and self.learning_rate_schedule in (
            "linear",
            "cosine",
        )
        if not decays and _ran_out_of_epochs(outcome.history, outcome.max_epochs):
            ran = f"max_iter={self.max_iter!r}"
            if self.max_iter == "auto":
                ran += f" ({outcome.max_epochs})"
            warnings.warn(
                f"{type(self).__name__} ran {ran} epochs and its "
                f"loss was still improving by more than tol={self.tol:g} within "
                f"the last n_iter_no_change={self.n_iter_no_change}. Raise max_iter "
                "to train further (warm_start=True continues this model), or "
                "ignore this warning if the epoch count is what you intended.",
                ConvergenceWarning,
                stacklevel=3,  # the caller of fit, past _fit_context
            )
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Make one pass of minibatch updates over X.

        The first call initializes the model from X (its mean sets the
        input-space bias); later calls continue training it, keeping the
        optimizer's state. Early stopping does not apply.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            A chunk of training data.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The updated estimator.
        """
        first_call = not hasattr(self, "module_")
        self._reject_booleans()
        self._check_params()
        if not first_call:
            self._check_incremental()
        with self._input_metadata_kept_on_failure():
            sums = []
            X = self._validate_X(X, reset=first_call, for_training=True, sums=sums)
            self._train(X, incremental=not first_call, single_pass=True, sums=sums[0])
        return self

    @contextmanager
    def _input_metadata_kept_on_failure(self):
        """Undo ``validate_data``'s update of the input metadata if the fit
        fails, so a failed refit leaves the estimator as it was."""
        names = ("n_features_in_", "feature_names_in_")
        saved = {name: self.__dict__[name] for name in names if name in self.__dict__}
        try:
            yield
        except BaseException:
            for name in names:
                self.__dict__.pop(name, None)
            self.__dict__.update(saved)
            raise

    def _train(
        self, X, *, incremental: bool, single_pass: bool = False, sums=None
    ) -> _Outcome:
        """Train on validated X, whose column sums, sum of squares and row
        count ``sums`` holds where its validation gathered them."""
        run = self._plan_run(X, incremental, single_pass)
        run.sums = sums
        work = self._batch_work(self.batch_size, run.source.n_features)
        products = resolve_precision(self.precision, run.device)
        with limited_threads(work), products_in(products):
            module, kept = self._start_module(run, incremental)
            optimizer = self._make_optimizer(
                module,
                run.resumed.optimizer
                if run.resumed is not None
                else self._saved_optimizer(incremental),
            )
            run.totals = EpochTotals.zeros(
                module.n_components, run.source.n_features, run.device
            )
            try:
                history = self._run_loop(run, module, optimizer)
                statistics = self._statistics(run, module, history)
            except BaseException:
                # A failed call leaves a continued model exactly as it was.
                if kept is not None:
                    kept.restore()
                raise
        self._set_fitted_state(module, optimizer, X.dtype, history, incremental)
        self._random_state = run.rng
        activity, n_rows, error, data = statistics
        self.activation_frequency_ = (activity / n_rows).cpu().numpy()
        self.n_dead_components_ = int(np.sum(self.activation_frequency_ == 0))
        score = None if error is None else _explained_variance(error, data)
        return _Outcome(history, run.rule.max_epochs, score)

    def _plan_run(self, X, incremental: bool, single_pass: bool) -> _Run:
        """Everything a training call decides before it builds a module: the
        random stream, the device, the rows and their split, and the
        checkpoint it resumes or will write."""
        # Continuing a model continues its random stream too, so successive
        # partial_fit calls do not all shuffle alike.
        rng = getattr(self, "_random_state", None) if incremental else None
        rng = check_random_state(self.random_state) if rng is None else rng
        device = resolve_device(self.device, for_training=True)
        self._check_solver(X, single_pass)
        source = RowSource(X)
        checkpoints = self.checkpoint_path is not None and not (
            incremental or single_pass
        )
        fingerprint = path = resumed = None
        if checkpoints:
            fingerprint = self._fingerprint(X)
            path = self._checkpoint_file(fingerprint)
            check_writable_folder(path, "checkpoint_path")
        self._check_memory(source, device, incremental)
        split = self._split_rows(source, rng, single_pass)
        if checkpoints:
            resumed = self._resumed_checkpoint(path, fingerprint)
        if resumed is not None:
            # The saved rows, not a new draw: with random_state=None the split
            # would differ, and validation rows would become training rows.
            split, rng = resumed.rows, resumed.rng
        train_rows = self._share_of(split[0])
        rule = StoppingRule(
            1 if single_pass else self._training_epochs(len(train_rows)),
            self.tol,
            self.n_iter_no_change,
        )
        return _Run(
            rng,
            device,
            source,
            split,
            train_rows,
            rule,
            single_pass,
            resumed,
            LoopState() if resumed is None else resumed.loop,
            self._schedule(rule.max_epochs, len(train_rows), single_pass),
            path if checkpoints else None,
            fingerprint,
        )

    def _start_module(self, run: _Run, incremental: bool) -> tuple:
        """The module this call trains: the fitted one (with the parameters
        changed since), the resumed checkpoint's, or a new one; and for the
        fitted one, its state as it was, for a failed call to restore."""
        kept = None
        if incremental:
            module = self.module_.to(run.device)
            kept = _KeptState(module)
            self._update_module(module)
        elif run.resumed is not None:
            skeleton = self._empty_module(run.source.n_features)
            module = restore_module(skeleton, run.resumed.module).to(run.device)
            self._update_module(module)
        else:
            module = self._initial_module(
                run.source,
                run.train_rows,
                run.rng,
                run.device,
                pretrain=not run.single_pass,
                sums=_training_sums(run),
            )
        return module, kept

    def _run_loop(self, run: _Run, module, optimizer):
        """Train ``module`` with the loop of :func:`train`; returns its history."""
        source, rng, rows = run.source, run.rng, run.train_rows
        loop = run.loop
        train_batches = self._epoch_batches(source, rows, rng, run.device, loop)
        callbacks = []
        if self.verbose:
            epochs = run.rule.max_epochs
            callbacks.append(Progress(epochs, len(rows), self._short_name()))
        logger.info(
            "%s: %s on %s, products in %s, up to %d epoch(s) of %d rows",
            self._short_name(),
            "one pass" if run.single_pass else f"training with {self._solver()}",
            run.device,
            str(resolve_precision(self.precision, run.device) or torch.float32)[6:],
            run.rule.max_epochs,
            len(rows),
        )
        if run.checkpoint_file is not None:
            callbacks.append(_Checkpointer(self, run, module, optimizer))
        history = train(
            parallel(module, run.device),
            optimizer,
            train_batches,
            run.rule,
            validation_batches=self._validation_batches(
                source, run.split[1], run.device
            ),
            totals=run.totals,
            state=loop,
            callbacks=callbacks,
            probe=self._probe(source, rows, run.device),
            schedule=run.schedule,
        )
        release_parallel()
        if history.interrupted:
            kept = "best weights so far" if loop.best_state else "last weights"
            warnings.warn(
                f"Training interrupted after {history.n_epochs} epoch(s); "
                f"keeping the {kept}.",
                RuntimeWarning,
                stacklevel=5,  # the caller of fit, past _train and _fit_context
            )
        return history

    def _statistics(self, run: _Run, module, history) -> tuple:
        """Every latent's activity summed over the training rows, their
        number, and (after ``fit``) the squared error over them and their
        column sums; raise if no latent fires on rows that vary.

        ``partial_fit`` reports what its pass saw. ``fit`` takes what the
        steps of its last epoch saw, at no cost of a pass of its own, where
        those describe the weights it keeps: that epoch was whole, its
        weights are kept (not an earlier epoch's, best on validation), and
        its codes are inference's. Otherwise, or where that epoch's error
        says the model is worse than the mean (its weights moved through
        it, and the warning that follows must not be a false alarm), a pass
        with the kept weights measures them.
        """
        totals, error, data = run.totals, None, None
        activity = totals.activity
        if not run.single_pass:
            if self._last_epoch_describes(run, module):
                error, data = _summed_totals(totals)
                if _explained_variance(error, data) >= 0:
                    return self._checked_statistics(
                        run, module, history, activity, error, data
                    )
            activity = torch.zeros_like(activity)
            error, data = self._measure(module, run.source, run.train_rows, activity)
        return self._checked_statistics(run, module, history, activity, error, data)

    def _last_epoch_describes(self, run: _Run, module) -> bool:
        """Whether the figures of the last epoch's steps are those of the
        weights ``fit`` keeps (see :meth:`_statistics`)."""
        n_epochs = run.loop.history.n_epochs
        return (
            run.totals.epoch == n_epochs > 0
            and kept_epoch(run.loop) == n_epochs
            and module.trains_as_it_infers
        )

    def _checked_statistics(self, run, module, history, activity, error, data):
        activity = sum_across(activity)
        n_rows = int(sum_across(activity.new_tensor(len(run.train_rows))))
        # A partial_fit pass over less than a batch says too little.
        enough = not run.single_pass or n_rows >= self.batch_size
        if enough and not bool(activity.any()):
            if _varies(data or _sums(run.source, run.train_rows)):
                raise all_latents_dead(module.n_components, history)
        return activity, n_rows, error, data

    def _probe(self, source, rows, device) -> torch.Tensor:
        """The first rows of ``rows`` in order, a batch of at most
        :data:`PROBE_ROWS`: the fixed rows whose loss, before training and
        after every epoch, tells divergence from noise."""
        size = min(self.batch_size, PROBE_ROWS)
        return next(iter_batches(source, rows.ordered(size), size, device))

    def _checkpoint_steps(self, n_rows: int) -> int:
        """Steps between mid-epoch checkpoints: a fractional interval saves
        that share of an epoch's steps apart; 0 for whole epochs."""
        interval = self.checkpoint_interval
        if interval >= 1:
            return 0
        return max(1, round(interval * -(-n_rows // self.batch_size)))

    def _checkpoint_file(self, fingerprint: dict) -> Path:
        """The checkpoint file of this run: ``checkpoint_path``, or in a
        folder given as ``checkpoint_path``, a file named for the run's
        fingerprint, so that every run (each fold of a cross-validation,
        each candidate of a grid search) resumes its own."""
        path = Path(self.checkpoint_path)
        if os.fspath(self.checkpoint_path) == "" or not path.is_dir():
            return path
        run = json.dumps(fingerprint, sort_keys=True).encode()
        name = f"{type(self).__name__}-{hashlib.sha256(run).hexdigest()[:16]}.ckpt"
        return path / name

    def _check_memory(self, source, device, incremental: bool) -> None:
        """Raise ValueError before any allocation when training cannot fit
        in ``device``'s memory: a lower bound of what it needs (the weights,
        their gradients and Adam's two moments, unless the model exists
        already, and one batch's codes) against what is available."""
        available = available_memory(device)
        if available is None:
            return
        n_params = 0 if incremental else self._parameter_count(source.n_features)
        lbfgs = self._solver() == "lbfgs"
        # L-BFGS holds all the rows, dense, and their codes at once, and
        # two vectors of its memory per step remembered instead of Adam's
        # two moments.
        batch_rows = source.n_rows if lbfgs else min(self.batch_size, source.n_rows)
        n_batch = self._activation_count(batch_rows, source.n_features, device)
        if lbfgs:
            n_batch += source.n_rows * source.n_features
        per_param = 4 * (2 + 2 * LBFGS_HISTORY) if lbfgs else 16
        weights, batch = per_param * n_params, 4 * n_batch
        if weights + batch <= available:
            return
        sizes = self._size_parameters()
        shown = ", ".join(f"{k}={v!r}" for k, v in sizes.items())
        if lbfgs:
            what = "the weights, their gradients and L-BFGS's memory"
            rows = "all rows and their codes"
            lower = f"Lower {' or '.join(sizes)}, or use solver='adam', which "
            lower += "takes minibatches."
        else:
            what = "the weights, their gradients and Adam's moments"
            rows = "one batch's codes"
            names = list(sizes) if weights > batch else [*sizes, "batch_size"]
            lower = f"Lower {' or '.join(names)}."
        raise ValueError(
            f"{type(self).__name__}({shown}, batch_size={self.batch_size}) needs at "
            f"least {_size(weights + batch)} of memory to train on {device} "
            f"({_size(weights)} for {what}; {_size(batch)} for {rows}), but "
            f"{_size(available)} is available. {lower}"
        )

    def _parameter_count(self, n_features: int) -> int:
        """Number of weights of the module for ``n_features`` inputs."""
        width = self._width()
        return 2 * width * n_features + width + n_features

    def _activation_count(self, n_rows: int, n_features: int, device) -> int:
        """Floats one training batch of ``n_rows`` holds at least on
        ``device``: its pre-activations and codes."""
        return 2 * n_rows * self._width()

    def _size_parameters(self) -> dict:
        """The parameters that set the module's size, by name."""
        return {"n_components": self.n_components}

    def _share_of(self, train_rows):
        """This process's training rows: all of them, or its shard when
        training with torch.distributed."""
        world = current_world()
        if world is None:
            return train_rows
        shard = train_rows.shard(world.rank, world.size)
        if len(shard) == 0:
            raise ValueError(
                f"{len(train_rows)} training rows cannot be shared among "
                f"{world.size} processes; use more rows or fewer processes."
            )
        return shard

    def _fingerprint(self, X) -> dict:
        """What a checkpoint must match to be resumed: the estimator, the data
        (shape, dtype and a hash of sampled rows) and every parameter that
        shapes the run (not those that only say how long, where or in what
        precision it runs)."""
        params = {
            name: _comparable(value)
            for name, value in self.get_params(deep=False).items()
            if name not in self._run_free_parameters
        }
        data = data_fingerprint(X)
        return {
            "estimator": type(self).__name__,
            "data_shape": data["shape"],
            "data_dtype": data["dtype"],
            "data_sample": data["sample_sha256"],
            **params,
        }

    def _resumed_checkpoint(self, path: Path, fingerprint: dict) -> Checkpoint | None:
        if not os.path.lexists(path):
            return None
        checkpoint = load_checkpoint(path)
        saved = checkpoint.fingerprint
        differences = [
            _difference(key, saved.get(key), value)
            for key, value in fingerprint.items()
            if saved.get(key) != value
        ]
        if differences:
            raise ValueError(
                f"checkpoint_path={str(path)!r} holds another run "
                f"({'; '.join(differences)}), and a checkpoint resumes only the "
                "run that wrote it: delete the file or choose another "
                "checkpoint_path to start afresh."
            )
        history = checkpoint.loop.history
        done = "" if checkpoint.loop.partial is None else " and part of the next"
        warnings.warn(
            f"Resuming {type(self).__name__} from {str(path)!r}: {history.n_epochs} "
            f"epoch(s){done} done of this run.",
            UserWarning,
            stacklevel=6,  # the caller of fit, past _plan_run, _train, _fit_context
        )
        return checkpoint

    def _short_name(self) -> str:
        """The class and the parameters set away from their defaults (but
        ``verbose``), cut to fit a progress bar: which candidate of a search
        a bar or a log line is about."""
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params(deep=False).items()
            if name != "verbose"
            and (name not in defaults or repr(value) != repr(defaults[name].default))
        ]
        text = f"{type(self).__name__}({', '.join(changed)})"
        if len(text) > SHORT_NAME_LENGTH:
            text = text[: SHORT_NAME_LENGTH - 1] + "…"
        return text

    def _activity_statistic(self) -> str:
        """What ``activation_frequency_`` holds: 'frequency' (the share of
        rows on which a latent fires) or, for smooth codes, 'mean
        activation'."""
        return "mean activation" if self.module_.smooth_codes else "frequency"

    def _saved_optimizer(self, incremental: bool) -> dict | None:
        if incremental:
            return getattr(self, "_optimizer_state", None)
        return None

    def _solver(self) -> str:
        """'adam' (minibatch steps) or 'lbfgs' (full-batch), where an
        estimator lets the user choose."""
        return self.get_params(deep=False).get("solver", "adam")

    def _new_optimizer(self, parameters) -> torch.optim.Optimizer:
        if self._solver() == "lbfgs":
            return lbfgs(parameters)
        return adam(parameters, self._learning_rate())

    def _solver_rules(self) -> list[Rule]:
        """The sparsity rules a solver must find a gradient in."""
        return [self._rule()]

    def _check_solver(self, X, single_pass: bool) -> None:
        """Refuse ``solver='lbfgs'`` where it cannot work, before any work:
        L-BFGS fits on all rows at once, on a loss with a gradient, with
        weights it alone moves."""
        if self._solver() != "lbfgs":
            return
        name = type(self).__name__
        if single_pass:
            raise ValueError(
                f"{name}.partial_fit takes minibatch steps and solver='lbfgs' "
                "fits on all rows at once: use fit, or solver='adam'."
            )
        if isinstance(X, np.memmap):
            raise ValueError(
                f"{name}(solver='lbfgs') fits on all rows at once and X is a "
                "memmap streamed from disk: load X into memory (np.asarray), or "
                "use solver='adam', which streams it."
            )
        if not all(rule.has_gradient for rule in self._solver_rules()):
            raise ValueError(
                f"{name}(solver='lbfgs') needs a loss with a gradient wherever the "
                "codes change; this sparsity switches latents on and off by a "
                "selection or a threshold, which has none. Use solver='adam'."
            )
        if self._dictionary() == "archetypal":
            raise ValueError(
                f"{name}(solver='lbfgs') cannot keep an archetypal dictionary in "
                "its hull (each step would be projected back, which L-BFGS's "
                "curvature estimates do not allow): use dictionary='free' or "
                "solver='adam'."
            )
        world = current_world()
        if world is not None and world.size > 1:
            raise ValueError(
                f"{name}(solver='lbfgs') runs in one process: its line search "
                "takes decisions on the loss of all rows. Use solver='adam' to "
                "train with torch.distributed."
            )

    def _epoch_batches(self, source, rows, rng, device, loop=None):
        """A function giving the batches of each epoch: shuffled minibatches,
        or for L-BFGS, all of ``rows`` as one batch, read once."""
        if self._solver() == "lbfgs":
            chunks = rows.ordered(source.chunk_rows(self.batch_size))
            whole = torch.cat(list(iter_batches(source, chunks, len(rows), device)))
            return lambda: [whole]

        def batches():
            if loop is not None:
                if loop.partial is not None:  # replay the epoch saved part-way
                    rng.set_state(loop.partial.rng_state)
                loop.epoch_rng_state = rng.get_state()
            chunks = rows.shuffled(source.chunk_rows(self.batch_size), rng)
            return iter_batches(source, chunks, self.batch_size, device, rng)

        return batches

    def _make_optimizer(self, module, saved: dict | None) -> torch.optim.Optimizer:
        optimizer = self._new_optimizer(module.parameters())
        if saved is not None and _solver_of(saved) != self._solver():
            saved = None  # a warm start that changed solver starts its state afresh
        if isinstance(optimizer, torch.optim.LBFGS):
            if saved is not None:
                optimizer.load_state_dict(copy.deepcopy(saved))
            return optimizer
        if saved is not None:
            # A copy: Adam updates its moments in place, and a failed call
            # must not leave them changed in the fitted state.
            optimizer.load_state_dict(copy.deepcopy(saved))
            for group in optimizer.param_groups:
                group["lr"] = self._learning_rate()
        return optimizer

    def _schedule(
        self, epochs: int, n_rows: int, single_pass: bool = False
    ) -> Schedule | None:
        """The learning rate of every step of a run of ``epochs`` epochs over
        ``n_rows`` rows; None where the optimizer's own rate stands (one
        pass of ``partial_fit``, and L-BFGS, whose line search sets it)."""
        if single_pass or self._solver() == "lbfgs":
            return None
        steps = epochs * -(-n_rows // self.batch_size)
        return Schedule(
            self.learning_rate_schedule,
            self._learning_rate(),
            steps,
            warmup_steps=math.floor(self.warmup * steps),
        )

    #: The steps a fit with ``max_iter='auto'`` plans for, in at most
    #: ``_auto_epochs`` passes over the rows.
    _auto_steps = 1500
    _auto_epochs = 200

    def _learning_rate(self) -> float:
        """Adam's peak step size: ``learning_rate``, resolved where a
        subclass offers 'auto'."""
        return self.learning_rate

    def _planned_epochs(self, n_rows: int) -> int:
        """``max_iter``, or for 'auto' as many epochs over ``n_rows`` rows as
        make :attr:`_auto_steps` steps, at most :attr:`_auto_epochs` (for
        L-BFGS, that many iterations)."""
        if self.max_iter != "auto":
            return self.max_iter
        if self._solver() == "lbfgs":
            return self._auto_steps
        per_epoch = -(-n_rows // self.batch_size)
        return min(self._auto_epochs, max(1, -(-self._auto_steps // per_epoch)))

    def _training_epochs(self, n_rows: int) -> int:
        """The epochs a ``fit`` plans over ``n_rows`` training rows."""
        return self._planned_epochs(n_rows)

    def _initial_module(
        self, source, train_rows, rng, device, *, pretrain: bool, sums: tuple
    ) -> torch.nn.Module:
        """The module ``fit`` starts from, given the training rows' ``sums``
        (column sums, sum of squares, count; over all processes' shards when
        training distributed). ``pretrain`` is False for ``partial_fit``,
        which only ever makes one pass."""
        col_sum, squares, n = sums
        mean = torch.from_numpy(col_sum / n)
        generator = torch.Generator().manual_seed(int(rng.randint(2**31 - 1)))
        module = self._make_module(source.n_features, mean, generator)
        epoch_rows = n if pretrain else None  # partial_fit sees no epochs
        self._adapt_to_data(
            module, mean_squared_norm=squares / n, epoch_rows=epoch_rows
        )
        if self._dictionary() == "archetypal":
            archetypes = _spread_rows(
                source, train_rows, _n_archetypes(module.n_components)
            )
            archetypes = (archetypes - mean.float()) * module.input_scale
            self._shape_dictionary(module, archetypes, generator)
        return module.to(device)

    def _dictionary(self) -> str:
        """How the atoms may move: 'free', or 'archetypal' (one-layer models)."""
        return self.get_params(deep=False).get("dictionary", "free")

    def _shape_dictionary(self, module, archetypes, generator) -> None:
        """Make ``module``'s dictionary archetypal. The archetypes (centred
        rows, or None for a module whose weights a file or checkpoint will
        fill) are scaled to an RMS norm of 1; each atom starts at its own
        archetype, drawn with ``generator``, and may move in the hull of all
        of them relaxed by ``relaxation``."""
        n_atoms, n_features = module.n_components, module.b_dec.shape[0]
        offsets = torch.zeros(n_atoms, n_features)
        if archetypes is None:
            n_archetypes = _n_archetypes(n_atoms)
            weights = torch.zeros(n_atoms, n_archetypes)
            archetypes = torch.zeros(n_archetypes, n_features)
        else:
            rms = archetypes.square().sum(dim=1).mean().sqrt()
            archetypes = archetypes / rms.clamp_min(1e-12)
            start = torch.randperm(len(archetypes), generator=generator)[:n_atoms]
            weights = torch.nn.functional.one_hot(start, len(archetypes)).float()
        module.make_archetypal(archetypes, self.relaxation, weights, offsets)

    def _adapt_to_data(
        self, module, *, mean_squared_norm: float, epoch_rows: int | None
    ) -> None:
        """Set what the new ``module`` takes from the training data's scale and
        epoch length (None for ``partial_fit``): nothing, unless a subclass
        says otherwise."""

    def _split_rows(self, source, rng, single_pass):
        rows = all_rows(source)
        if single_pass or not self.early_stopping:
            return rows, None
        n_val = int(np.ceil(self.validation_fraction * source.n_rows))
        if n_val < 1 or n_val >= source.n_rows:
            raise ValueError(
                f"early_stopping with validation_fraction={self.validation_fraction} "
                f"leaves no training or no validation rows out of {source.n_rows} "
                "samples; use more samples, another validation_fraction, or "
                "early_stopping=False."
            )
        train_rows, val_rows = rows.split(n_val, rng)
        if len(train_rows) == 0 or len(val_rows) == 0:
            raise ValueError(
                f"early_stopping on a memmap holds out whole blocks of "
                f"{train_rows.block_size} rows, and {source.n_rows} rows make too "
                "few blocks; use more rows or early_stopping=False."
            )
        return train_rows, val_rows

    def _validation_batches(self, source, val_rows, device):
        if val_rows is None:
            return None
        step = source.chunk_rows(self.batch_size)
        return lambda: iter_batches(
            source, val_rows.ordered(step), self._inference_batch_rows(), device
        )

    @torch.no_grad()
    def _measure(self, module, source, rows, activity) -> tuple[float, tuple]:
        """Add every latent's activity over ``rows`` to ``activity``; return
        the squared reconstruction error over them, and their column sums,
        sum of squares and count, all over every process's rows."""
        module.eval()
        chunks = rows.ordered(source.chunk_rows(self.batch_size))
        device = activity.device
        totals = torch.zeros(source.n_features + 2, dtype=torch.float64, device=device)
        for x in iter_batches(source, chunks, self._inference_batch_rows(), device):
            batch_activity, error = module.measure(x)
            activity += batch_activity
            x = x.double()
            totals[:-2] += x.sum(dim=0)
            totals[-2] += x.square().sum()
            totals[-1] += error
        n_rows = int(sum_across(totals.new_tensor(float(len(rows)))))
        totals = sum_across(totals).cpu().numpy()
        return float(totals[-1]), (totals[:-2], float(totals[-2]), n_rows)

    def _set_fitted_state(self, module, optimizer, dtype, history, incremental):
        self.module_ = module
        self._optimizer_state = optimizer.state_dict()
        self.n_iter_ = (self.n_iter_ if incremental else 0) + history.n_epochs
        self.loss_curve_ = (self.loss_curve_ if incremental else []) + history.loss
        scores = [evaluation.explained_variance for evaluation in history.validation]
        if incremental and hasattr(self, "validation_scores_"):
            scores = self.validation_scores_ + scores
        if scores:
            self.validation_scores_ = scores
            self.best_validation_score_ = max(scores)
        else:
            self.__dict__.pop("validation_scores_", None)
            self.__dict__.pop("best_validation_score_", None)
        self._fitted_architecture = self._architecture()
        atoms = module.atoms().detach().cpu().numpy()
        self.components_ = atoms.astype(_output_dtype(dtype))

    # ----------------------------------------------------------- inference

    def transform(self, X):
        """Encode X into sparse codes.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components)
            The codes, in X's float dtype.
        """
        check_is_fitted(self)
        encode = self._encoder()
        X = self._validate_X(X, reset=False)
        # The module's own codes are written straight into the output.
        fill = _encode_into if encode is _encode else None
        return self._map_batches(X, encode, self._n_features_out, fill)

    def _encoder(self):
        """The function of (module, batch) that gives :meth:`transform`'s codes."""
        return _encode

    @contextmanager
    def _code_batches(self, X):
        """``(first row, codes)`` for each inference batch of X, in row order:
        the codes of :meth:`transform`, on the inference device, in X's float
        precision, until the caller moves them. :mod:`skae.inspect` reads
        codes through this."""
        check_is_fitted(self)
        encode = self._encoder()
        X = self._validate_X(X, reset=False)
        with self._inference_batches(X) as (module, batches):

            def codes():
                start = 0
                for x in batches:
                    yield start, encode(module, x)
                    start += x.shape[0]

            yield codes()

    def inverse_transform(self, X):
        """Decode codes back into input space.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_components)
            Codes, as returned by :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            The reconstruction, in the codes' float dtype.
        """
        check_is_fitted(self)
        with np.errstate(invalid="ignore", over="ignore"):  # said by the error
            codes = check_array(X, accept_sparse="csr", dtype=_FLOATS)
        if codes.shape[1] != self._decoder_width():
            raise ValueError(
                f"inverse_transform got codes with {codes.shape[1]} columns, but "
                f"{type(self).__name__} decodes {self._decoder_width()}."
            )
        if sp.issparse(codes) and self.module_.decodes_sparse:
            decoded = self._decode_sparse(codes)
        else:
            decoded = self._map_batches(codes, _decode, self.n_features_in_)
        _check_finite(decoded, "reconstructions", codes.dtype)
        return decoded

    def _decode_sparse(self, codes) -> np.ndarray:
        """:meth:`inverse_transform` of CSR codes, batch by batch, reading
        only the atoms of the stored codes: a dense batch of a wide model's
        codes would cost ``n_components / k`` times the work."""
        out = np.empty(
            (codes.shape[0], self.n_features_in_), dtype=_output_dtype(codes.dtype)
        )
        rows = self._inference_batch_rows()
        with self._inference_batches(codes) as (module, _):
            device, dtype = module.b_dec.device, module.b_dec.dtype
            for start in range(0, codes.shape[0], rows):
                block = codes[start : start + rows]
                values = torch.from_numpy(block.data).to(device, dtype)
                indices = torch.from_numpy(block.indices).to(device, torch.long)
                offsets = torch.from_numpy(block.indptr[:-1]).to(device, torch.long)
                decoded = module.decode_sparse(values, indices, offsets)
                out[start : start + rows] = decoded.cpu().numpy()
        return out

    def _decoder_width(self) -> int:
        """Number of code columns that ``inverse_transform`` decodes."""
        return self._n_features_out

    def score_samples(self, X):
        """Negative squared reconstruction error of each sample.

        Higher means better reconstructed, i.e. more typical of the training
        data, as with scikit-learn's outlier detectors.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Data to score.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            ``-||x - x_hat||^2`` for every row.
        """
        check_is_fitted(self)
        return self._negative_errors(self._validate_X(X, reset=False))

    def score(self, X, y=None):
        """Explained variance of the reconstruction of X.

        ``1 - sum ||x - x_hat||^2 / sum ||x - mean(X)||^2``: 1 is perfect, 0 is
        no better than predicting the mean. Higher is better, so
        ``GridSearchCV`` can use it without a scorer.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Data to reconstruct.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        score : float
            The explained variance.
        """
        check_is_fitted(self)
        sums = []
        X = self._validate_X(X, reset=False, sums=sums)
        sse = -float(np.sum(self._negative_errors(X), dtype=np.float64))
        col_sum, squares, n = sums[0]
        sst = squares - float(col_sum @ col_sum) / n
        if sst <= 0:
            return float(sse == 0.0)
        return 1.0 - sse / sst

    def _negative_errors(self, X) -> np.ndarray:
        def negative_error(module, x):
            reconstruction = module.reconstruct(x)
            return -(reconstruction - x).square().sum(dim=1, keepdim=True)

        errors = self._map_batches(X, negative_error, 1).ravel()
        _check_finite(errors, "squared reconstruction errors", X.dtype)
        return errors

    def _map_batches(self, X, fn, n_out: int, fill=None) -> np.ndarray:
        """``fn(module, batch)`` over X in order, gathered into one array.

        ``fill(module, batch, out)``, where given, writes the same result
        into ``out``, a tensor view of the array's rows that holds zeros,
        instead: on the CPU, the batch's result is then never a matrix of
        its own, allocated, zeroed and copied.
        """
        dtype = _output_dtype(X.dtype)
        # np.zeros: a large array comes from the kernel already zeroed, so
        # its pages are written once, on first touch, rather than twice.
        out = (np.empty if fill is None else np.zeros)((X.shape[0], n_out), dtype)
        with self._inference_batches(X) as (module, batches):
            if fill is not None:
                _map_pages(out)
            start = 0
            for x in batches:
                stop = start + x.shape[0]
                if (
                    fill is not None
                    and x.device.type == "cpu"
                    and x.dtype == _TORCH[np.dtype(dtype)]
                ):
                    fill(module, x, torch.from_numpy(out[start:stop]))
                else:
                    out[start:stop] = fn(module, x).cpu().numpy()
                start = stop
        return out

    @contextmanager
    def _inference_batches(self, X, rows: int | None = None):
        """``(module, batches)``: the fitted module ready for inference on the
        inference device, and X's rows in order, in batches on that device,
        of :meth:`_inference_batch_rows` rows unless ``rows`` says."""
        device = resolve_device(self.device, for_training=False)
        # Moved outside inference mode: parameters moved inside it would
        # become inference tensors that later training cannot use.
        module = self.module_.to(device)
        products = resolve_precision(self.precision, device)
        dtype = self._inference_dtype(X.dtype)
        if dtype == torch.float64:
            module = module_copy(module, dtype=dtype)
        work = self._batch_work(self._inference_batch_rows(), X.shape[1])
        with limited_threads(work), products_in(products), torch.inference_mode():
            module.eval()
            yield module, self._ordered_batches(RowSource(X), device, dtype, rows)

    def _batch_work(self, n_rows: int, n_features: int) -> int:
        """Multiply-adds of a forward pass over ``n_rows`` rows, roughly: an
        encoder and a decoder of ``n_features`` by the code width."""
        return 2 * n_rows * n_features * self._n_features_out

    def _ordered_batches(self, source, device, dtype=torch.float32, rows=None):
        rows = self._inference_batch_rows() if rows is None else rows
        chunks = sequential_chunks(source.n_rows, source.chunk_rows(rows))
        return iter_batches(source, chunks, rows, device, dtype=dtype)

    def _inference_batch_rows(self) -> int:
        # Large batches for throughput (smaller products run slower: see
        # benchmarks/run.py --only kernels), bounded so that activations
        # stay near 16 MiB.
        width = max(self._decoder_width(), getattr(self, "n_features_in_", 1))
        return int(np.clip(INFERENCE_ELEMENTS // width, self.batch_size, 2**16))

    @property
    def _n_features_out(self) -> int:
        if hasattr(self, "components_"):
            return self.components_.shape[0]
        return self._width()

    def _width(self) -> int:
        """Number of codes per sample that the current parameters ask for."""
        return self.n_components

    # --------------------------------------------------------- validation

    def _validate_X(
        self, X, *, reset: bool, for_training: bool = False, sums: list | None = None
    ):
        """Validate X without copying it; memmaps are checked chunk by chunk.

        X must be finite and small enough in magnitude for the float
        precision it is computed in: :data:`TRAINING_MAGNITUDE_LIMIT` for
        training, or what keeps squared reconstruction errors finite for
        inference. ``sums``, a list, receives X's column sums, sum of squares
        and row count, gathered in the same pass.
        """
        X = _without_dates(X)
        if len(getattr(X, "shape", ())) == 2 and X.shape[1] == 0:
            # scikit-learn's words, which a frame with no columns never reaches.
            raise ValueError(
                f"Found array with 0 feature(s) (shape={tuple(X.shape)}) while a "
                f"minimum of 1 is required by {type(self).__name__}."
            )
        if isinstance(X, np.memmap) and X.ndim == 2:
            validate_data(self, X[:1], reset=reset, dtype=None, ensure_all_finite=False)
            if X.dtype.kind not in "fiub":
                raise TypeError(f"X has dtype {X.dtype}; a numeric dtype is needed.")
        else:
            X = validate_data(
                self,
                X,
                reset=reset,
                accept_sparse="csr",
                dtype=_FLOATS,
                ensure_all_finite=False,
            )
        bad, largest, found = scan_values(RowSource(X), sums=sums is not None)
        if sums is not None:
            sums.append(found)
        if bad is not None:
            row, col, value = bad
            kind = "NaN" if np.isnan(value) else "infinity"
            raise ValueError(
                f"Input X contains {kind} (first at row {row}, column {col}); "
                f"{type(self).__name__} needs finite values. Impute or drop them, "
                "for example with sklearn.impute.SimpleImputer."
            )
        if for_training:
            limit = self._training_magnitude_limit()
            why = "train on: it trains in float32, where the squared gradients"
        else:
            dtype = self._inference_dtype(X.dtype)
            limit = _inference_limit(dtype, X.shape[1])
            name = str(dtype).removeprefix("torch.")
            why = f"compute with: in {name}, the squared errors"
        if largest > limit:
            raise ValueError(
                f"Input X holds values up to {largest:.3g} in magnitude, beyond the "
                f"{limit:.3g} that {type(self).__name__} can {why} of larger "
                "data overflow. Scale X first, for example with "
                "sklearn.preprocessing.StandardScaler."
            )
        return X

    def _training_magnitude_limit(self) -> float:
        """Largest magnitude of training data; see TRAINING_MAGNITUDE_LIMIT."""
        return TRAINING_MAGNITUDE_LIMIT

    def _inference_dtype(self, dtype) -> torch.dtype:
        """The dtype inference computes in for data of ``dtype``.

        Training runs in float32; float64 data is encoded in float64 with a
        float64 copy of the weights, so each row's result does not depend on
        which other rows share its batch (float32 GEMM kernels differ in the
        last bit with the row's position). With bfloat16 products there is no
        float64 result to keep: float64 data is encoded in float32.
        """
        products = resolve_precision(self.precision, inference_device(self.device))
        float64 = _output_dtype(dtype) == np.float64 and products is None
        return torch.float64 if float64 else torch.float32

    # ------------------------------------------------------- persistence

    def __getstate__(self):
        # A copy: BaseEstimator may hand back the live __dict__ itself.
        state = dict(super().__getstate__())
        module = state.get("module_")
        if module is not None and any(
            p.device.type != "cpu" for p in module.parameters()
        ):
            state["module_"] = cpu_copy(module)
        if state.get("_optimizer_state") is not None:
            state["_optimizer_state"] = _to_cpu(state["_optimizer_state"])
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _plain_attributes(module: torch.nn.Module) -> list[tuple[torch.nn.Module, dict]]:
    """Every submodule's attributes other than its tensors and children (its
    sparsity rule, settings, counters), to put back after a failed call."""
    containers = {"_parameters", "_buffers", "_modules"}
    return [
        (sub, {k: v for k, v in vars(sub).items() if k not in containers})
        for sub in module.modules()
    ]


def _comparable(value):
    """A parameter's value as plain Python, so that a checkpoint's fingerprint
    compares ``np.int64(16)`` equal to 16 and a tuple equal to a list."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_comparable(item) for item in value]
    if value is None or isinstance(value, (int, float, str)):
        return value
    # A RandomState instance or another object: only its kind can be compared.
    return type(value).__name__


def _to_cpu(obj):
    """A copy of a nested container of tensors with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {key: _to_cpu(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(value) for value in obj)
    return obj


def _items(value):
    """``value``'s items, however nested in lists, tuples and arrays."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        yield from value.ravel()
    elif isinstance(value, (list, tuple, np.ndarray)):
        for item in value:
            yield from _items(item)
    else:
        yield value


def _decode(module: torch.nn.Module, codes: torch.Tensor) -> torch.Tensor:
    return module.decode(codes)


def _check_finite(results: np.ndarray, what: str, dtype) -> None:
    """Refuse to return overflowed results: inputs too large for the model's
    weights in the precision they are computed in."""
    if not np.isfinite(results).all():
        name = np.dtype(dtype).name
        advice = "" if name == "float64" else ", or pass float64 input"
        raise ValueError(
            f"The {what} overflow {name}: the input is too large in magnitude "
            f"for this model. Scale it as the training data were{advice}."
        )


def _inference_limit(dtype: torch.dtype, n_features: int) -> float:
    """Largest input magnitude whose squared reconstruction error, summed
    over ``n_features``, stays finite in ``dtype`` (with a margin of 10)."""
    return math.sqrt(torch.finfo(dtype).max / (4 * max(1, n_features))) / 10


def _without_dates(X):
    """X, refused if it holds dates or durations, which would otherwise
    become numbers (nanoseconds or days) silently; lists become arrays."""
    if isinstance(X, (list, tuple)):
        X = np.asarray(X)
    dtypes = getattr(X, "dtypes", None)  # a DataFrame's columns
    dtypes = list(dtypes) if isinstance(dtypes, Iterable) else []
    dtypes.append(getattr(X, "dtype", None))
    if any(getattr(dtype, "kind", "") in ("m", "M") for dtype in dtypes):
        raise TypeError(
            "X holds dates or durations (datetime64 or timedelta64); convert them "
            "to numbers you choose (for example elapsed seconds) first."
        )
    return X
