"""Built-in data: natural-image patches and sparse signals with known atoms."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params


def _halve(image: np.ndarray) -> np.ndarray:
    """Average 2 × 2 pixel blocks. The photographs are JPEGs, whose 8 × 8
    compression blocks would otherwise line up with 8 × 8 patches, and
    whitening amplifies their edges."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    return image[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _whiten(image: np.ndarray) -> np.ndarray:
    """Flatten an image's 1/f amplitude spectrum, as for Olshausen & Field's
    whitened images used in CS294A: filter by ``f * exp(-(f / f0)^4)`` with
    ``f0 = 0.4`` cycles per pixel (their 200 cycles per 512-pixel picture),
    then scale to unit variance."""
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.rfftfreq(image.shape[1])[None, :]
    f = np.hypot(fx, fy)
    spectrum = np.fft.rfft2(image - image.mean()) * f * np.exp(-((f / 0.4) ** 4))
    white = np.fft.irfft2(spectrum, s=image.shape)
    return white / white.std()


@validate_params(
    {
        "n_patches": [Interval(Integral, 1, None, closed="left")],
        "patch_size": [Interval(Integral, 2, 64, closed="both")],
        "preprocessing": [StrOptions({"cs294a"}), None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_image_patches(
    n_patches, patch_size=8, *, preprocessing=None, random_state=None
):
    """Square grayscale patches cut at random from natural photographs.

    The photographs are the two that ship with scikit-learn
    (:func:`sklearn.datasets.load_sample_images`, 427 × 640 pixels each),
    which need Pillow to load.

    Parameters
    ----------
    n_patches : int
        Number of patches, split evenly between the two photographs.
    patch_size : int, default=8
        Side of a patch in pixels, 2 to 64.
    preprocessing : {'cs294a'} or None, default=None
        None: gray levels in [0, 1]. 'cs294a': the pipeline of Ng's CS294A
        sparse autoencoder exercise. Each photograph is whitened (its 1/f
        amplitude spectrum flattened, as in Olshausen & Field's images).
        Each patch then has its mean removed, values are clipped to ±3
        standard deviations, and the result is rescaled into [0.1, 0.9] for
        sigmoid outputs.
    random_state : int, RandomState instance or None, default=None
        Seeds where the patches are cut and their order.

    Returns
    -------
    patches : ndarray of shape (n_patches, patch_size ** 2)
        One flattened patch per row, row-major, float64.

    Examples
    --------
    >>> from skae.datasets import make_image_patches
    >>> X = make_image_patches(1000, preprocessing="cs294a", random_state=0)
    >>> X.shape
    (1000, 64)
    >>> bool(X.min() >= 0.1 and X.max() <= 0.9)
    True
    """
    from sklearn.datasets import load_sample_images
    from sklearn.feature_extraction.image import extract_patches_2d

    rng = check_random_state(random_state)
    images = [image.mean(axis=2) / 255.0 for image in load_sample_images().images]
    if preprocessing == "cs294a":
        images = [_whiten(_halve(image)) for image in images]
    counts = np.full(len(images), n_patches // len(images))
    counts[: n_patches % len(images)] += 1
    patches = np.concatenate(
        [
            extract_patches_2d(
                image, (patch_size, patch_size), max_patches=int(n), random_state=rng
            ).reshape(int(n), -1)
            for image, n in zip(images, counts, strict=True)
            if n
        ]
    )
    patches = patches[rng.permutation(n_patches)]
    if preprocessing == "cs294a":
        patches = patches - patches.mean(axis=1, keepdims=True)
        limit = 3 * patches.std()
        patches = (np.clip(patches, -limit, limit) / limit + 1) * 0.4 + 0.1
    return patches


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, 1, None, closed="left")],
        "n_atoms": [Interval(Integral, 1, None, closed="left")],
        "k": [Interval(Integral, 1, None, closed="left")],
        "noise": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_sparse_signals(
    n_samples, n_features, n_atoms, k, *, noise=0.0, random_state=None
):
    """Signals that are non-negative sums of ``k`` of ``n_atoms`` known atoms.

    Each row is ``codes[i] @ dictionary + noise * N(0, 1)``. The dictionary
    has random unit-norm atoms, and each row has ``k`` distinct atoms with
    coefficients uniform in [1, 3]. The known atoms and codes make it
    possible to measure dictionary recovery and code accuracy.

    Parameters
    ----------
    n_samples : int
        Number of rows.
    n_features : int
        Dimension of each signal.
    n_atoms : int
        Number of atoms in the true dictionary, at least ``k``.
    k : int
        Number of active atoms per row.
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to every entry.
    random_state : int, RandomState instance or None, default=None
        Seeds the dictionary, the codes and the noise.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        The signals.
    dictionary : ndarray of shape (n_atoms, n_features)
        The true atoms, one unit-norm row each.
    codes : scipy.sparse.csr_matrix of shape (n_samples, n_atoms)
        The true coefficients, exactly ``k`` non-zeros per row.

    Examples
    --------
    >>> from skae.datasets import make_sparse_signals
    >>> X, dictionary, codes = make_sparse_signals(500, 20, 40, 3, random_state=0)
    >>> X.shape, dictionary.shape, codes.shape
    ((500, 20), (40, 20), (500, 40))
    >>> bool((codes.getnnz(axis=1) == 3).all())
    True
    """
    if k > n_atoms:
        raise ValueError(f"k={k} must be at most n_atoms={n_atoms}.")
    rng = check_random_state(random_state)
    dictionary = rng.standard_normal((n_atoms, n_features))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    # k distinct atoms per row: the k smallest of n_atoms uniform keys.
    atoms = np.argpartition(rng.random_sample((n_samples, n_atoms)), k - 1, axis=1)[
        :, :k
    ]
    values = rng.uniform(1.0, 3.0, size=(n_samples, k))
    indptr = np.arange(0, n_samples * k + 1, k)
    codes = sp.csr_matrix(
        (values.ravel(), atoms.ravel(), indptr), shape=(n_samples, n_atoms)
    )
    codes.sort_indices()
    X = codes @ dictionary
    if noise:
        X += noise * rng.standard_normal(X.shape)
    return X, dictionary, codes
