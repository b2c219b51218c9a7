"""Seeded CPU fits give exactly the numbers they gave when pinned.

The refactor of the engine (issue 14) must leave every fitted model's numbers
unchanged; this holds it to that, bit for bit. See tests/data/make_pinned_fits.py.
"""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
_spec = importlib.util.spec_from_file_location(
    "make_pinned_fits", DATA / "make_pinned_fits.py"
)
pinned = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pinned)


@pytest.mark.parametrize("name", list(pinned.models()))
def test_a_seeded_fit_gives_the_pinned_numbers(name):
    expected = np.load(DATA / "pinned-fits.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few epochs on noise: not the point here
        got = pinned.fitted(name, pinned.models()[name], pinned.data())
    for key, value in got.items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
