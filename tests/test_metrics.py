"""skae.metrics."""

import numpy as np
import pytest

from skae.metrics import atom_localization, spectral_concentration


def test_localization_separates_local_from_spread_atoms():
    rng = np.random.RandomState(0)
    spread = atom_localization(rng.standard_normal((500, 64)), (8, 8), 4)
    local = np.zeros((500, 8, 8))
    local[:, 2:5, 3:6] = rng.standard_normal((500, 3, 3))
    local = atom_localization(local.reshape(500, 64), (8, 8), 4)
    assert 0.3 < spread.mean() < 0.45
    # Removing the mean spreads a little energy over the whole patch.
    assert np.median(local) > 0.98 and local.min() > 0.85


def test_localization_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"not rows of 8x8 images"):
        atom_localization(np.zeros((3, 60)), (8, 8), 4)
    with pytest.raises(ValueError, match="window=9 does not fit"):
        atom_localization(np.zeros((3, 64)), (8, 8), 9)


def test_spectral_concentration_separates_gratings_from_noise():
    rng = np.random.RandomState(0)
    rows, cols = np.mgrid[:8, :8]
    angles = rng.uniform(0, np.pi, 200)
    gratings = np.stack(
        [np.cos(np.pi / 2 * (np.cos(a) * rows + np.sin(a) * cols)) for a in angles]
    ).reshape(200, 64)
    noise = spectral_concentration(rng.standard_normal((500, 64)), (8, 8))
    clean = spectral_concentration(gratings, (8, 8))
    assert 0.3 < noise.mean() < 0.45
    assert np.median(clean) > 0.85
    # A constant image has no pattern to concentrate: only its DC term.
    assert spectral_concentration(np.ones((1, 64)) + 0 * rows.ravel(), (8, 8))[0] == 0
    # Adding a constant changes nothing: the DC term is not counted.
    np.testing.assert_allclose(
        spectral_concentration(gratings + 3.0, (8, 8)), clean, rtol=1e-12
    )


def test_spectral_concentration_rejects_bad_shapes_and_peaks():
    with pytest.raises(ValueError, match="not rows of 8x8 images"):
        spectral_concentration(np.ones((2, 63)), (8, 8))
    with pytest.raises(ValueError, match="n_peaks=64 must be below"):
        spectral_concentration(np.ones((2, 64)), (8, 8), n_peaks=64)
