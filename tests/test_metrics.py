"""skae.metrics."""

import numpy as np
import pytest

from skae.metrics import atom_localization


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
