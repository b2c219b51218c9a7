import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Property-based tests (test_properties.py): bounded and derandomized, so a CI
# run is quick and repeatable. Loaded here, before hypothesis reads the
# command line, so that --hypothesis-profile=NAME still chooses another.
settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
settings.register_profile(
    "thorough", parent=settings.get_profile("ci"), max_examples=400
)
settings.load_profile("ci")


def make_sparse_data(
    n_samples=2000, n_features=32, n_atoms=48, k=3, noise=0.01, seed=0
):
    """Rows that are sums of k of n_atoms random unit atoms, plus a little noise."""
    rng = np.random.RandomState(seed)
    atoms = rng.randn(n_atoms, n_features)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n_samples, n_atoms))
    rows = np.repeat(np.arange(n_samples), k)
    cols = np.argsort(rng.rand(n_samples, n_atoms), axis=1)[:, :k].ravel()
    codes[rows, cols] = rng.uniform(1.0, 3.0, size=rows.size)
    return codes @ atoms + noise * rng.randn(n_samples, n_features), atoms


@pytest.fixture(scope="session")
def sparse_data():
    X, _ = make_sparse_data()
    return X


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data / 16.0, data.target


@pytest.fixture
def small_X():
    return np.random.RandomState(0).randn(120, 6)


@pytest.fixture(scope="session")
def patches():
    from skae.datasets import make_image_patches

    return make_image_patches(10_000, preprocessing="cs294a", random_state=0)


@pytest.fixture
def count_epochs(monkeypatch):
    """Call it for a list that gains an item for every training epoch run
    from then on (a call after ``monkeypatch.undo()`` counts afresh)."""
    import skae._engine.training

    def start() -> list:
        original = skae._engine.training.train_epoch
        calls = []

        def counted(*args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)

        monkeypatch.setattr(skae._engine.training, "train_epoch", counted)
        return calls

    return start


@pytest.fixture
def validation_rows():
    """The rows an early-stopping fit holds out: call it with the row count
    (and ``seed``, ``fraction`` when not 0 and 0.1)."""

    def rows(n_rows, seed=0, fraction=0.1):
        permuted = np.random.RandomState(seed).permutation(n_rows)
        return np.sort(permuted[: int(np.ceil(fraction * n_rows))])

    return rows


@pytest.fixture
def python_env():
    """The environment for a Python subprocess that imports the skae these
    tests import (a source tree or a mutation-testing copy, not only the
    installed package)."""
    import skae

    root = str(Path(skae.__file__).resolve().parents[1])
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
