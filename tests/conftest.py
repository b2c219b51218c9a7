import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from tqdm.std import tqdm

from skae._engine.topk import SparseCodes
from skae._engine.training import Callback, added_callbacks

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

# tqdm's default write lock holds a multiprocessing semaphore, shared by every
# process forked after it exists. A forked test process killed inside a bar's
# write (mutmut's timeouts) leaves it held, and every later one then blocks on
# its first bar. The tests draw bars from one process: a thread lock will do.
tqdm.set_lock(threading.RLock())


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


class Hook(Callback):
    """A training-loop callback made of functions: ``train_begin(state,
    module)``, ``epoch_begin(state)``, ``step_begin(state)`` and
    ``step_end(state, step)``, ``epoch_end(state)`` and ``train_end(state)``,
    each optional."""

    def __init__(self, **calls) -> None:
        self.calls = calls

    def _call(self, name, *args) -> None:
        if name in self.calls:
            self.calls[name](*args)

    def on_train_begin(self, state, module) -> None:
        self._call("train_begin", state, module)

    def on_epoch_begin(self, state) -> None:
        self._call("epoch_begin", state)

    def on_step_begin(self, state) -> None:
        self._call("step_begin", state)

    def on_step_end(self, state, step) -> None:
        self._call("step_end", state, step)

    def on_epoch_end(self, state) -> None:
        self._call("epoch_end", state)

    def on_train_end(self, state) -> None:
        self._call("train_end", state)


@pytest.fixture
def hook():
    """Call it with :class:`Hook`'s arguments to have every training loop
    call them from then on, to the test's end."""
    with contextlib.ExitStack() as stack:

        def add(**calls) -> None:
            stack.enter_context(added_callbacks(Hook(**calls)))

        yield add


@pytest.fixture
def count_epochs(hook):
    """Call it for a list that gains an item for every training epoch begun
    from then on, pretraining epochs included."""

    def start() -> list:
        calls = []
        hook(epoch_begin=lambda state: calls.append(1))
        return calls

    return start


@pytest.fixture
def count_steps(hook):
    """Call it for a list that gains an item for every training step begun
    from then on."""

    def start() -> list:
        calls = []
        hook(step_begin=lambda state: calls.append(1))
        return calls

    return start


@contextlib.contextmanager
def _interrupted(*, epoch=None, step=None):
    counts = {"epoch": 0, "step": 0}

    def count(what, at):
        counts[what] += 1
        if counts[what] == at:
            raise KeyboardInterrupt

    hook = Hook(
        epoch_begin=lambda state: count("epoch", epoch),
        step_begin=lambda state: count("step", step),
    )
    with added_callbacks(hook):
        yield


@pytest.fixture
def interrupt():
    """``with interrupt(epoch=n):`` or ``interrupt(step=n)``: Ctrl-C as the
    block's n-th training epoch or step (counted over every loop) begins."""
    return _interrupted


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


class LastEpochActivity(Callback):
    """Every latent's activity over the steps of the last epoch trained,
    computed from the steps' codes: firings (non-zero codes) of sparse
    codes, the codes themselves of smooth ones. ``frequency`` is their
    share of the epoch's rows: what ``activation_frequency_`` reports."""

    def on_train_begin(self, state, module):
        self.width, self.smooth = module.n_components, module.smooth_codes

    def on_epoch_begin(self, state):
        self.total, self.rows = np.zeros(self.width), 0

    def on_step_end(self, state, step):
        codes = step.output.codes
        if isinstance(codes, SparseCodes):  # each row's kept latents
            dense = np.zeros((len(step.x), self.width))
            np.add.at(
                dense,
                (np.arange(len(step.x))[:, None], codes.indices.numpy()),
                codes.values.detach().numpy(),
            )
            codes = dense
        else:
            codes = codes.detach().numpy()
        self.total += codes.sum(axis=0) if self.smooth else (codes != 0).sum(axis=0)
        self.rows += len(step.x)

    @property
    def frequency(self):
        return self.total / self.rows


@pytest.fixture
def last_epoch_activity():
    """A :class:`LastEpochActivity` that watches every fit of the test."""
    recorder = LastEpochActivity()
    with added_callbacks(recorder):
        yield recorder
