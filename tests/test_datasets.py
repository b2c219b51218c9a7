"""skae.datasets: image patches and sparse signals."""

import numpy as np
import pytest

from skae.datasets import make_image_patches, make_sparse_signals


def test_image_patches_shape_range_and_seed():
    X = make_image_patches(301, patch_size=6, random_state=0)
    assert X.shape == (301, 36)
    assert X.min() >= 0 and X.max() <= 1
    np.testing.assert_array_equal(
        X, make_image_patches(301, patch_size=6, random_state=0)
    )
    assert not np.array_equal(X, make_image_patches(301, patch_size=6, random_state=1))


def test_cs294a_preprocessing():
    X = make_image_patches(2000, preprocessing="cs294a", random_state=0)
    assert X.min() >= 0.1 and X.max() <= 0.9
    # The mean of every patch was removed before rescaling around 0.5 (the
    # clipping at 3 standard deviations moves a few patch means a little).
    deviation = np.abs(X.mean(axis=1) - 0.5)
    assert np.median(deviation) < 1e-3 and deviation.max() < 0.1
    # Whitening flattens the spectrum: neighbouring pixels are far less
    # correlated than in the raw photographs.
    raw = make_image_patches(2000, random_state=0).reshape(-1, 8, 8)
    white = X.reshape(-1, 8, 8)

    def neighbour_correlation(P):
        return np.corrcoef(P[:, :, :-1].ravel(), P[:, :, 1:].ravel())[0, 1]

    assert neighbour_correlation(raw) > 0.9  # measured 0.97
    assert neighbour_correlation(white) < 0.7  # measured 0.59


def test_sparse_signals_are_what_they_claim():
    X, dictionary, codes = make_sparse_signals(400, 16, 32, 3, random_state=0)
    assert (
        X.shape == (400, 16)
        and dictionary.shape == (32, 16)
        and codes.shape == (400, 32)
    )
    np.testing.assert_allclose(np.linalg.norm(dictionary, axis=1), 1.0)
    assert (codes.getnnz(axis=1) == 3).all()
    assert codes.data.min() >= 1.0 and codes.data.max() <= 3.0
    np.testing.assert_allclose(X, codes @ dictionary)
    noisy, _, _ = make_sparse_signals(400, 16, 32, 3, noise=0.1, random_state=0)
    assert 0.05 < np.std(noisy - X) < 0.15


def test_sparse_signals_reject_k_above_n_atoms():
    with pytest.raises(ValueError, match="k=5 must be at most n_atoms=4"):
        make_sparse_signals(10, 3, 4, 5)
