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
