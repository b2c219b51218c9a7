"""Plots of fitted sparse autoencoders, in scikit-learn's Display style.

Each Display holds the data it draws, ``plot(ax=None)`` draws it and keeps
the matplotlib objects (``figure_``, ``ax_`` and the artists), and
``from_estimator`` builds one from a fitted skae estimator. matplotlib is an
optional dependency: ``pip install matplotlib`` (or the ``bench``/``docs``
extras).
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted


def _axes(ax, caller: str, figsize: tuple[float, float] | None = None):
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f"{caller} needs matplotlib, an optional dependency of skae: "
            "pip install matplotlib"
        ) from exc

    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _autoencoder(estimator):
    """The fitted skae autoencoder in ``estimator``: itself, the last one in
    a Pipeline, or the one an outlier detector wraps."""
    from ._base import BaseSparseAutoencoder

    if isinstance(estimator, BaseSparseAutoencoder):
        check_is_fitted(estimator)
        return estimator
    steps = getattr(estimator, "steps", None)
    if steps is not None:
        for _, step in reversed(steps):
            if isinstance(step, BaseSparseAutoencoder) or hasattr(step, "steps"):
                return _autoencoder(step)
    if hasattr(estimator, "estimator_"):
        return _autoencoder(estimator.estimator_)
    check_is_fitted(estimator)
    raise TypeError(
        f"{type(estimator).__name__} is not a skae autoencoder, a Pipeline "
        "holding one, or a SparseAutoencoderOutlierDetector."
    )


def _tile(atoms: np.ndarray, image_shape: tuple[int, ...], n_cols: int) -> np.ndarray:
    """One mosaic image of atoms, each scaled to [-1, 1], one pixel apart."""
    height, width = image_shape[:2]
    n_rows = -(-len(atoms) // n_cols)
    channels = image_shape[2] if len(image_shape) == 3 else 1
    mosaic = np.full(
        (n_rows * (height + 1) + 1, n_cols * (width + 1) + 1, channels), np.nan
    )
    scale = np.abs(atoms).max(axis=1, keepdims=True)
    scaled = atoms / np.where(scale > 0, scale, 1)
    for i, atom in enumerate(scaled):
        r, c = divmod(i, n_cols)
        top, left = 1 + r * (height + 1), 1 + c * (width + 1)
        mosaic[top : top + height, left : left + width] = atom.reshape(
            height, width, channels
        )
    return mosaic[:, :, 0] if channels == 1 else (mosaic + 1) / 2


class DictionaryDisplay:
    """Dictionary atoms as image tiles, or as heat-map rows.

    Parameters
    ----------
    atoms : ndarray of shape (n_atoms, n_features)
        One atom per row, e.g. ``components_``.
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(height, width, 3)``: draw each atom as an
        image tile. None draws the atoms as rows of a heat map.
    title : str or None, default=None
        The axes' title; None says how many atoms are drawn.

    Attributes
    ----------
    image_ : matplotlib.image.AxesImage
        The drawn mosaic or heat map.
    ax_ : matplotlib.axes.Axes
        Axes with the plot.
    figure_ : matplotlib.figure.Figure
        Figure containing the plot.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_digits
    >>> from skae import KSparseAutoencoder
    >>> from skae.plotting import DictionaryDisplay
    >>> sae = KSparseAutoencoder(64, 8, max_iter=5, random_state=0)
    >>> sae = sae.fit(load_digits().data / 16)
    >>> display = DictionaryDisplay.from_estimator(sae, image_shape=(8, 8))
    >>> display.image_.get_array().shape
    (73, 73)
    """

    def __init__(self, atoms, *, image_shape=None, title=None):
        self.atoms = atoms
        self.image_shape = image_shape
        self.title = title

    def plot(self, ax=None, *, cmap="RdBu_r"):
        """Draw the atoms.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.
        cmap : str, default='RdBu_r'
            Colormap for grey-level atoms, centred on zero.

        Returns
        -------
        display : DictionaryDisplay
            The display, with its matplotlib objects.
        """
        atoms = np.asarray(self.atoms, dtype=float)
        n_cols = int(np.ceil(np.sqrt(len(atoms))))
        # Tiles of about 0.6 inch, so that an atom's pixels can be told apart.
        side = min(max(0.6 * n_cols + 1, 4.0), 12.0)
        figsize = (6.4, 4.8) if self.image_shape is None else (side, side)
        ax = _axes(ax, "DictionaryDisplay.plot", figsize)
        if self.image_shape is None:
            limit = np.abs(atoms).max() or 1.0
            self.image_ = ax.imshow(
                atoms,
                aspect="auto",
                cmap=cmap,
                vmin=-limit,
                vmax=limit,
                interpolation="nearest",
            )
            ax.set_xlabel("feature")
            ax.set_ylabel("atom")
        else:
            mosaic = _tile(atoms, tuple(self.image_shape), n_cols)
            self.image_ = ax.imshow(
                mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest"
            )
            ax.set_axis_off()
        ax.set_title(self.title or f"{len(atoms)} atoms")
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, image_shape=None, n_atoms=None, ax=None):
        """Draw a fitted estimator's ``components_``, most active first.

        Parameters
        ----------
        estimator : fitted skae estimator, or a Pipeline holding one
            A skae autoencoder, a Pipeline whose last autoencoder is drawn,
            or a SparseAutoencoderOutlierDetector.
        image_shape : tuple of int or None, default=None
            Shape of one atom as an image; None draws heat-map rows.
        n_atoms : int or None, default=None
            Draw only the ``n_atoms`` most frequently active atoms.
        ax : matplotlib Axes, default=None
            Axes to draw on.

        Returns
        -------
        display : DictionaryDisplay
        """
        estimator = _autoencoder(estimator)
        order = np.argsort(-estimator.activation_frequency_, kind="stable")
        atoms = estimator.components_[order[:n_atoms]]
        total = len(order)
        drawn = (
            f"{len(atoms)} atoms"
            if len(atoms) == total
            else (f"the {len(atoms)} most active of {total} atoms")
        )
        title = f"{type(estimator).__name__}: {drawn}, most active first"
        return cls(atoms, image_shape=image_shape, title=title).plot(ax=ax)


class LossCurveDisplay:
    """Training loss per epoch, with the validation score when there is one.

    Parameters
    ----------
    loss_curve : array-like of float
        Training loss per epoch (``loss_curve_``).
    validation_scores : array-like of float or None, default=None
        Validation explained variance per epoch (``validation_scores_``).

    Attributes
    ----------
    line_ : matplotlib Line2D
        The training loss.
    validation_line_ : matplotlib Line2D or None
        The validation score, on a second y axis (its label and ticks in its
        color); a dotted line marks its best epoch, whose weights a fit with
        ``early_stopping`` keeps.
    legend_ : matplotlib Legend
        Names both curves.
    ax_, figure_ : matplotlib Axes and Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skae.plotting import LossCurveDisplay
    >>> display = LossCurveDisplay([3.0, 2.0, 1.5], [0.2, 0.5, 0.6]).plot()
    >>> display.line_.get_ydata().tolist()
    [3.0, 2.0, 1.5]
    """

    def __init__(self, loss_curve, validation_scores=None):
        self.loss_curve = loss_curve
        self.validation_scores = validation_scores

    def plot(self, ax=None):
        """Draw the curves; returns the display."""
        ax = _axes(ax, "LossCurveDisplay.plot")
        epochs = np.arange(1, len(self.loss_curve) + 1)
        (self.line_,) = ax.plot(
            epochs, self.loss_curve, color="C0", label="training loss (left)"
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss", color="C0")
        ax.tick_params(axis="y", labelcolor="C0")
        lines = [self.line_]
        self.validation_line_ = None
        if self.validation_scores is not None:
            scores = np.asarray(self.validation_scores, dtype=float)
            twin = ax.twinx()
            (self.validation_line_,) = twin.plot(
                epochs,
                scores,
                color="C1",
                label="validation explained variance (right)",
            )
            twin.set_ylabel("validation explained variance", color="C1")
            twin.tick_params(axis="y", labelcolor="C1")
            best = int(np.nanargmax(scores)) + 1
            lines.append(self.validation_line_)
            lines.append(
                ax.axvline(best, color="gray", ls=":", label=f"best epoch ({best})")
            )
        self.legend_ = ax.legend(handles=lines, loc="best")
        ax.set_title("Training history")
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, ax=None):
        """Draw ``loss_curve_`` (and ``validation_scores_``) of a fitted
        estimator, a Pipeline holding one, or an outlier detector's."""
        estimator = _autoencoder(estimator)
        return cls(
            estimator.loss_curve_, getattr(estimator, "validation_scores_", None)
        ).plot(ax=ax)


class ActivationFrequencyDisplay:
    """Histogram of log10 latent firing frequencies, the SAE field's view of
    dead (never firing) and dense (always firing) latents.

    Parameters
    ----------
    frequencies : array-like of float
        Fraction of samples on which each latent fires
        (``activation_frequency_``).
    bins : int, default=40
        Histogram bins over the non-zero frequencies.
    statistic : {'frequency', 'mean activation'}, default='frequency'
        What the values are: the share of rows on which a latent fires, or,
        for smooth codes that are never exactly zero (sigmoid units under a
        KL penalty), each unit's mean activation, where no unit is dead.

    Attributes
    ----------
    n_dead_ : int or None
        Latents that never fire (frequency 0); they cannot sit on a log axis
        and are counted in the title instead. None for mean activations.
    bars_ : matplotlib BarContainer
        The histogram's bars.
    ax_, figure_ : matplotlib Axes and Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skae.plotting import ActivationFrequencyDisplay
    >>> display = ActivationFrequencyDisplay([0.0, 0.01, 0.1, 0.1]).plot()
    >>> display.n_dead_
    1
    """

    def __init__(self, frequencies, *, bins=40, statistic="frequency"):
        self.frequencies = frequencies
        self.bins = bins
        self.statistic = statistic

    def plot(self, ax=None):
        """Draw the histogram; returns the display."""
        if self.statistic not in ("frequency", "mean activation"):
            raise ValueError(
                "statistic must be 'frequency' or 'mean activation', got "
                f"{self.statistic!r}."
            )
        ax = _axes(ax, "ActivationFrequencyDisplay.plot")
        frequencies = np.asarray(self.frequencies, dtype=float)
        alive = frequencies[frequencies > 0]
        from matplotlib.ticker import MaxNLocator

        _, _, self.bars_ = ax.hist(np.log10(alive), bins=self.bins)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("latents")
        if self.statistic == "frequency":
            self.n_dead_ = int((frequencies == 0).sum())
            ax.set_xlabel("log10 share of rows on which a latent fires")
            title = f"{len(frequencies)} latents, {self.n_dead_} never fire"
        else:
            self.n_dead_ = None
            ax.set_xlabel("log10 mean activation of a unit")
            title = f"{len(frequencies)} smooth units (never exactly off)"
        ax.set_title(title)
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, bins=40, ax=None):
        """Draw ``activation_frequency_`` of a fitted estimator, a Pipeline
        holding one, or an outlier detector's; for smooth codes it is the
        units' mean activation, and the plot says so."""
        estimator = _autoencoder(estimator)
        statistic = estimator._activity_statistic()
        return cls(
            estimator.activation_frequency_, bins=bins, statistic=statistic
        ).plot(ax=ax)
