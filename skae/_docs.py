"""Docstring sections shared by every estimator, written once."""

from __future__ import annotations

import inspect
import re
import textwrap

_TRAINING_PARAMETERS = """\
learning_rate_schedule : {'constant', 'linear', 'cosine', 'adaptive'}, \
default=${learning_rate_schedule}
    How Adam's step size changes over a ``fit``. After the warm-up,
    ``'constant'`` keeps ``learning_rate``; ``'linear'`` and ``'cosine'``
    decay it, along a line or half a cosine, to a tenth of
    ``learning_rate`` at the last step of ``max_iter`` epochs: the run is
    planned to last ``max_iter`` epochs and ends there without a
    ``ConvergenceWarning`` (``tol`` may still end it sooner).
    ``'adaptive'``, as in scikit-learn's MLP, divides the rate by 5 where
    ``tol`` and ``n_iter_no_change`` would stop, and stops once it is below
    a thousandth of ``learning_rate``. Each ``fit`` with ``warm_start``
    runs a schedule of its own; ``partial_fit`` steps at ``learning_rate``.
    A checkpoint holds the step count and the adaptive rate, so a resumed
    run follows the same rates (over the ``max_iter`` it is resumed with).
warmup : float, default=${warmup}
    Share of the planned steps (``max_iter`` epochs) over which the rate
    rises linearly from near 0 to ``learning_rate``, in [0, 1).
batch_size : int, default=${batch_size}
    Rows per minibatch.
max_iter : int or 'auto', default=${max_iter}
    Maximum number of epochs (passes over the training data). ``'auto'``:
    as many epochs as make about 1500 steps of ``batch_size`` rows (500
    with :class:`KSparseAutoencoder`'s pursuit encoders), at most 200: 31
    epochs of 50,000 rows in batches of 1024, 200 of 1,797. With
    ``'linear'`` or ``'cosine'`` the schedule spans them.
tol : float, default=${tol}
    Relative tolerance: training stops when the monitored loss (the
    validation loss with ``early_stopping``, else the training loss) has
    not improved by ``tol`` times its best value for ``n_iter_no_change``
    consecutive epochs. Being relative, it means the same for data of any
    scale (scikit-learn's MLP compares the loss with an absolute ``tol``).
n_iter_no_change : int, default=${n_iter_no_change}
    Epochs without improvement before stopping.
early_stopping : bool, default=False
    Hold out ``validation_fraction`` of the rows, monitor the loss on
    them, and keep the weights of the best validation epoch. A memmap holds
    out whole blocks of about 64 KiB of rows.
validation_fraction : float, default=0.1
    Fraction of rows held out when ``early_stopping`` is True, in (0, 1).
warm_start : bool, default=False
    When True, ``fit`` continues training the fitted model (and its
    optimizer state) with the current parameters instead of starting
    afresh; ``n_components`` cannot change.
device : str or torch.device, default='auto'
    Where to train: ``'auto'`` (CUDA when available, else CPU),
    ``'cpu'``, ``'cuda'`` or ``'cuda:N'``. A fitted model is stored on the
    CPU when pickled and transforms on any machine.
precision : {'auto', 'float32', 'bfloat16'}, default='auto'
    Operand type of the matrix products in training and inference.
    ``'bfloat16'`` multiplies bfloat16 copies of the operands with float32
    accumulation, and keeps weights, activations, penalties and the loss in
    float32 (mixed precision, as ``torch.autocast`` gives a product). On a
    GPU, and on CPUs with AVX512-BF16 or AMX, the products run several
    times faster; elsewhere torch emulates them, more slowly. Products are
    then off by about 0.4%, and top-k may swap latents that tie to that
    precision. ``'auto'`` is bfloat16 on CUDA devices that support it and
    float32 elsewhere; ``'float32'`` computes in the data's own precision
    (float64 inference on float64 data).
random_state : int, RandomState instance or None, default=None
    Seeds initialization, shuffling and the validation split. With an int,
    two fits on the same data give bitwise-identical models on the CPU
    with the same number of threads.
verbose : int, default=0
    Show a progress bar of the training rows (and of a ``partial_fit`` pass)
    when positive.
checkpoint_path : str, path-like or None, default=None
    File where ``fit`` saves the model, the optimizer's state and the
    training history every ``checkpoint_interval`` epochs and at the end,
    or an existing folder, in which each run gets a file of its own. When
    the run's checkpoint exists as ``fit`` starts, training resumes from it
    instead of starting afresh, with a warning that says so (with an int
    ``random_state``, a resumed fit ends bitwise-identical to an
    uninterrupted one on the CPU). A checkpoint resumes only the run that
    wrote it: the same estimator, parameters (other than those that only
    say how long, where or in what precision to train) and data (shape,
    dtype and a hash of sampled rows); any other is refused with an error
    that says what differs. With a folder, the folds of ``cross_val_score``
    and the candidates of ``GridSearchCV`` each resume their own run. The
    file is written atomically and holds tensors and JSON, no pickle:
    loading it runs no code. Only a fresh ``fit`` checkpoints: warm-start
    continuations and ``partial_fit`` calls neither save nor resume.
checkpoint_interval : int or float, default=1
    Epochs between checkpoints. A float between 0 and 1 saves that share of
    an epoch apart (0.1: ten times an epoch), for runs of few long epochs;
    a fit then resumes from the step it saved, replaying the epoch's batch
    order, and ends as an uninterrupted one would.
"""

_FITTED_ATTRIBUTES = """\
loss_curve_ : list of float
    Mean training objective (squared error per sample plus any penalty)
    of every epoch.
validation_scores_ : list of float
    Explained variance on the validation rows after every epoch; only
    with ``early_stopping``.
best_validation_score_ : float
    Best of ``validation_scores_``; only with ``early_stopping``.
n_dead_components_ : int
    Latents never active on the training rows: the zeros of
    ``activation_frequency_`` (always 0 for sigmoid units).
n_iter_ : int
    Number of epochs run (one per ``partial_fit`` call).
module_ : torch.nn.Module
    The trained torch module.
n_features_in_ : int
    Number of features seen during ``fit``.
feature_names_in_ : ndarray of shape (n_features,)
    Names of features seen during ``fit``, when X has string column names.
"""

_DICTIONARY_PARAMETERS = """\
dictionary : {'free', 'archetypal'}, default='free'
    How the atoms may move. ``'archetypal'`` holds each atom in the convex
    hull of ``4 * n_components`` training rows (at most 8192; centred, spread evenly
    through the data, whatever the seed), relaxed by ``relaxation``: atom
    ``i`` is ``w_i @ A + l_i``, with ``w_i`` non-negative and summing to 1,
    and ``||l_i||`` at most ``relaxation`` times the RMS norm of the rows
    ``A`` (the relaxed archetypal SAE of Fel et al. 2025). Dictionaries
    then vary less from seed to seed, at some cost in reconstruction
    (``benchmarks/results/archetypal.md``); the atoms' norms are free.
relaxation : float, default=0.1
    With ``dictionary='archetypal'``: how far an atom may leave the hull,
    as a share of the rows' RMS norm, ``>= 0``.
"""

_SOLVER_PARAMETERS = """\
solver : {'adam', 'lbfgs'}, default=${solver}
    How the weights are fit. ``'adam'`` takes minibatch steps of
    ``batch_size`` rows. ``'lbfgs'`` (as in scikit-learn's MLP) takes
    quasi-Newton steps on the loss of all training rows at once, with a
    line search: for data that fits in memory and smooth penalties, it
    reaches lower losses in fewer passes. With ``'lbfgs'``, ``max_iter``
    counts its iterations (each one an entry of ``loss_curve_``), the
    learning rate, its schedule and ``batch_size`` are not used, and
    ``partial_fit``, memmaps, archetypal dictionaries and selections
    without a gradient (``'topk'``) are refused.
"""

_SECTIONS = {
    "dictionary_parameters": _DICTIONARY_PARAMETERS,
    "training_parameters": _TRAINING_PARAMETERS,
    "solver_parameters": _SOLVER_PARAMETERS,
    "fitted_attributes": _FITTED_ATTRIBUTES,
}


def _shown(value) -> str:
    """A default as a docstring writes it: ``1e-4``, not ``0.0001``."""
    if isinstance(value, float) and value and abs(value) < 0.01:
        return f"{value:.0e}".replace("e-0", "e-")
    return repr(value)


def _with_defaults(text: str, cls: type) -> str:
    """``text`` with every ``${name}`` replaced by the default of ``cls``'s
    parameter ``name``, so that shared sections state each class's own."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
    }
    return re.sub(r"\$\{(\w+)\}", lambda m: _shown(defaults[m.group(1)]), text)


def fill_doc(cls: type) -> type:
    """Replace ``%(name)s`` placeholder lines in ``cls.__doc__`` with shared
    sections, indented like the placeholder, stating ``cls``'s defaults."""
    lines = []
    for line in cls.__doc__.splitlines():
        name = line.strip()
        if name.startswith("%(") and name.endswith(")s"):
            indent = line[: len(line) - len(line.lstrip())]
            section = _with_defaults(_SECTIONS[name[2:-2]], cls)
            lines.append(textwrap.indent(section, indent).rstrip("\n"))
        else:
            lines.append(line)
    cls.__doc__ = "\n".join(lines)
    return cls
