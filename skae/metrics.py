"""Measures of sparse dictionaries and codes."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.utils._param_validation import Interval, validate_params


@validate_params(
    {
        "atoms": ["array-like"],
        "image_shape": [tuple],
        "window": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def atom_localization(atoms, image_shape, window):
    """Share of each image atom's energy inside its best ``window`` square.

    Each atom has its mean removed and is reshaped to ``image_shape``. Its
    squared values, normalized to sum to 1, are summed over every
    ``window × window`` square, and the largest sum is kept. An atom whose
    energy sits in one place scores near 1. Random atoms score about the
    window's share of the pixels: 0.39 for 4 × 4 windows in 8 × 8 patches.

    Parameters
    ----------
    atoms : array-like of shape (n_atoms, height * width)
        One flattened image atom per row, row-major (``components_``).
    image_shape : tuple of (int, int)
        ``(height, width)`` of an atom.
    window : int
        Side of the square window, at most ``min(height, width)``.

    Returns
    -------
    localization : ndarray of shape (n_atoms,)
        Values in (0, 1]; higher is more localized.

    Examples
    --------
    >>> import numpy as np
    >>> from skae.metrics import atom_localization
    >>> corner = np.zeros((8, 8)); corner[:2, :2] = [[1, -1], [-1, 1]]
    >>> float(atom_localization(corner.reshape(1, 64), (8, 8), 4)[0]) > 0.9
    True
    """
    atoms = np.asarray(atoms, dtype=np.float64)
    height, width = image_shape
    if atoms.ndim != 2 or atoms.shape[1] != height * width:
        raise ValueError(
            f"atoms of shape {atoms.shape} are not rows of {height}x{width} images."
        )
    if window > min(height, width):
        raise ValueError(f"window={window} does not fit in a {height}x{width} image.")
    centered = atoms - atoms.mean(axis=1, keepdims=True)
    energy = (centered**2).reshape(-1, height, width)
    energy /= np.maximum(energy.sum(axis=(1, 2), keepdims=True), np.finfo(float).tiny)
    windows = sliding_window_view(energy, (window, window), axis=(1, 2))
    return windows.sum(axis=(-1, -2)).max(axis=(1, 2))


@validate_params(
    {
        "atoms": ["array-like"],
        "image_shape": [tuple],
        "n_peaks": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def spectral_concentration(atoms, image_shape, n_peaks=8):
    """Share of each image atom's non-constant Fourier power in its
    ``n_peaks`` strongest frequencies.

    Each atom is reshaped to ``image_shape`` and its 2-D discrete Fourier
    power computed; the constant (DC) term is dropped. A clean oriented edge
    or grating puts nearly all its power in a few frequencies and scores
    near 1; noise spreads it over all of them: random 8 × 8 atoms score
    about 0.38 with ``n_peaks=8``. Ng's CS294A edge detectors score about
    0.9.

    Parameters
    ----------
    atoms : array-like of shape (n_atoms, height * width)
        One flattened image atom per row, row-major (``components_``).
    image_shape : tuple of (int, int)
        ``(height, width)`` of an atom.
    n_peaks : int, default=8
        Frequencies counted, fewer than ``height * width``. The power of a
        real image is symmetric, so each oriented frequency counts twice.

    Returns
    -------
    concentration : ndarray of shape (n_atoms,)
        Values in (0, 1]; higher is a cleaner pattern.

    Examples
    --------
    >>> import numpy as np
    >>> from skae.metrics import spectral_concentration
    >>> rows, cols = np.mgrid[:8, :8]
    >>> grating = np.cos(2 * np.pi * (rows + cols) / 4).reshape(1, 64)
    >>> noise = np.random.RandomState(0).randn(1, 64)
    >>> [round(float(v), 2) for v in spectral_concentration(
    ...     np.vstack([grating, noise]), (8, 8))]
    [1.0, 0.38]
    """
    atoms = np.asarray(atoms, dtype=np.float64)
    height, width = image_shape
    if atoms.ndim != 2 or atoms.shape[1] != height * width:
        raise ValueError(
            f"atoms of shape {atoms.shape} are not rows of {height}x{width} images."
        )
    if n_peaks >= height * width:
        raise ValueError(
            f"n_peaks={n_peaks} must be below the {height * width} frequencies "
            f"of a {height}x{width} image."
        )
    power = np.square(np.abs(np.fft.fft2(atoms.reshape(-1, height, width))))
    power = power.reshape(len(atoms), -1)[:, 1:]  # without the constant term
    power = -np.sort(-power, axis=1)
    total = np.maximum(power.sum(axis=1), np.finfo(float).tiny)
    return power[:, :n_peaks].sum(axis=1) / total
