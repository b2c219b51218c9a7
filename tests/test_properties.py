"""Property-based attacks on every estimator with odd inputs and hyperparameters.

Hypothesis draws inputs of every dtype, shape, value class and container
(C and Fortran arrays, read-only arrays, memmaps, every scipy.sparse format,
lists, DataFrames) and out-of-range or mistyped hyperparameters, and checks
the contract of DESIGN.md's "Errors" section:

1. A method either raises a ``ValueError`` or ``TypeError`` whose message
   names the problem, or returns finite results of the right shape and a
   float dtype; input without a problem is accepted.
2. The input is never modified in place.
3. A failed call leaves a fitted model exactly as it was, and inference
   never changes it.
4. A bad hyperparameter gives a ``ValueError`` or ``TypeError`` naming it at
   fit, before training starts; a huge one trains or is refused likewise.

``pytest tests/test_properties.py --hypothesis-show-statistics`` reports, per
test, how each class of input (dtype, container, shape, values) was handled.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import signal
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import event, given, note
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.exceptions import ConvergenceWarning
from torch.optim.optimizer import register_optimizer_step_pre_hook

from skae import (
    ConvSparseAutoencoder,
    JumpReLUSparseAutoencoder,
    KLSparseAutoencoder,
    KSparseAutoencoder,
    L1SparseAutoencoder,
    L2SparseAutoencoder,
    SparseAutoencoderOutlierDetector,
    StackedSparseAutoencoder,
)

try:
    import pandas as pd
except ImportError:  # DataFrames are drawn only where pandas is installed
    pd = None

try:
    import resource
except ImportError:  # not on Windows: calls run without a memory limit
    resource = None

# ---------------------------------------------------------------- settings

# The "ci" settings profile (bounded, derandomized) is registered and loaded
# in conftest.py; --hypothesis-profile chooses another.

# The tiny models below run out of epochs by design.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# -------------------------------------------------------------- estimators

N_FEATURES = 4
GOOD_X = np.random.RandomState(0).randn(16, N_FEATURES)
TINY = {"max_iter": 1, "batch_size": 4, "random_state": 0}

ESTIMATORS = {
    "KSparse": lambda: KSparseAutoencoder(4, k=2, **TINY),
    "L1": lambda: L1SparseAutoencoder(4, alpha=0.1, **TINY),
    "L2": lambda: L2SparseAutoencoder(4, alpha=0.1, **TINY),
    "KL": lambda: KLSparseAutoencoder(4, **TINY),
    "JumpReLU": lambda: JumpReLUSparseAutoencoder(4, **TINY),
    "Stacked(kl)": lambda: StackedSparseAutoencoder((4, 2), "kl", **TINY),
    "Stacked(l1)": lambda: StackedSparseAutoencoder((4, 2), "l1", **TINY),
    "Stacked(l2)": lambda: StackedSparseAutoencoder((4, 2), "l2", **TINY),
    "Stacked(topk)": lambda: StackedSparseAutoencoder((4, 2), "topk", k=1, **TINY),
    "Conv": lambda: ConvSparseAutoencoder(n_components=2, kernel_size=3, **TINY),
    "OutlierDetector": lambda: SparseAutoencoderOutlierDetector(
        KSparseAutoencoder(4, k=2, **TINY)
    ),
}
AUTOENCODER_METHODS = (
    "fit",
    "partial_fit",
    "transform",
    "inverse_transform",
    "score",
    "score_samples",
)
DETECTOR_METHODS = ("fit", "score_samples", "decision_function", "predict")
INFERENCE = {
    "transform",
    "inverse_transform",
    "score",
    "score_samples",
    "decision_function",
    "predict",
}


def methods_of(name: str) -> tuple[str, ...]:
    return DETECTOR_METHODS if name == "OutlierDetector" else AUTOENCODER_METHODS


_FITTED: dict[str, tuple] = {}


def fitted(name: str):
    """A fresh copy of estimator ``name`` fitted on GOOD_X, the width of the
    codes ``transform`` returns and the width ``inverse_transform`` takes
    (the convolutional model decodes its unpooled maps)."""
    if name not in _FITTED:
        model = ESTIMATORS[name]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(GOOD_X)
        if is_detector(model):
            n_out = n_in = None
        else:
            n_out = n_in = model.transform(GOOD_X).shape[1]
        if isinstance(model, ConvSparseAutoencoder):
            unpooled = copy.deepcopy(model).set_params(pool_size=None)
            n_in = unpooled.transform(GOOD_X).shape[1]
        _FITTED[name] = (model, n_out, n_in)
    model, n_out, n_in = _FITTED[name]
    return copy.deepcopy(model), n_out, n_in


def is_detector(model) -> bool:
    return isinstance(model, SparseAutoencoderOutlierDetector)


# ------------------------------------------------------------------ inputs

F64_MAX, F32_MAX = float(np.finfo(np.float64).max), float(np.finfo(np.float32).max)
SPECIAL_VALUES = {
    "nan": [math.nan],
    "inf": [math.inf, -math.inf],
    "huge": [1e30, -1e30, 1e300, -1e300, F64_MAX, -F64_MAX, F32_MAX, -F32_MAX],
    "subnormal": [5e-324, -5e-324, 1e-310, 2.2250738585072014e-308, 1e-45, 1e-40],
}
VALUE_KINDS = ("ordinary", "nan", "inf", "huge", "subnormal", "all-equal rows")
DTYPES = (
    "float64",
    "float32",
    "float16",
    "int64",
    "int8",
    "uint8",
    "bool",
    "complex64",
    "complex128",
    "object",
    "object with a string",
    "str",
    "datetime64[s]",
    "timedelta64[s]",
)
SPARSE_FORMATS = tuple(
    f"{fmt}_{kind}"
    for fmt in ("csr", "csc", "coo", "lil", "dok", "bsr", "dia")
    for kind in ("matrix", "array")
)
SPARSE_DTYPES = {"float64", "float32", "int64", "int8", "uint8", "bool"}
SPARSE_DTYPES |= {"complex64", "complex128"}
HUGE_MAGNITUDE = 1e15
_FILE_NUMBERS = itertools.count()


@dataclass(frozen=True)
class OddInput:
    """A drawn input: its values (already of the drawn dtype and shape) and
    the container to hand them over in, built fresh for each call."""

    array: np.ndarray
    dtype: str
    values: str
    container: str

    def build(self, directory):
        a, container = self.array, self.container
        if container == "ndarray":
            return a.copy()
        if container == "Fortran-ordered":
            return np.asfortranarray(a)
        if container == "read-only":
            a = a.copy()
            a.flags.writeable = False
            return a
        if container in ("memmap", "read-only memmap"):
            path = directory / f"X{next(_FILE_NUMBERS)}.npy"
            m = np.lib.format.open_memmap(path, "w+", dtype=a.dtype, shape=a.shape)
            m[...] = a
            m.flush()
            return np.load(path, mmap_mode="r") if container.startswith("read") else m
        if container == "list":
            return a.tolist()
        if container == "DataFrame":
            return pd.DataFrame(a)
        return getattr(sp, container)(a)

    def shape_label(self, width: int | None) -> str:
        """The shape's class, ``width`` being the number of columns expected."""
        if self.array.ndim != 2:
            return f"{self.array.ndim}-D"
        n_rows, n_cols = self.array.shape
        if n_rows == 0:
            return "0 rows"
        if n_cols == 0:
            return "0 columns"
        if width is not None and n_cols != width:
            return "wrong width"
        return "1 row" if n_rows == 1 else "2-D"

    def problems(self, width: int | None) -> set[str]:
        """What is wrong with this input, as keys of PROBLEM_WORDS."""
        found = set()
        if self.array.dtype.kind not in "biuf":  # even objects that hold numbers
            found.add("dtype")
        if self.shape_label(width) not in ("2-D", "1 row"):
            found.add("shape")
        numbers = as_numbers(self.array)
        if numbers is not None and numbers.size:
            found |= {"nan"} if np.isnan(numbers).any() else set()
            found |= {"inf"} if np.isinf(numbers).any() else set()
            finite = np.abs(numbers[np.isfinite(numbers)])
            found |= {"huge"} if (finite > HUGE_MAGNITUDE).any() else set()
        return found


def as_numbers(array: np.ndarray) -> np.ndarray | None:
    """``array`` as complex numbers, or None where it holds no numbers."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(array).astype(np.complex128)
    except (TypeError, ValueError):
        return None


def cast(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` (float64) as ``dtype``, saturating where the dtype is narrower."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype == "bool":
            return values != 0
        if dtype in ("int64", "int8", "uint8", "datetime64[s]", "timedelta64[s]"):
            info = np.iinfo(dtype if dtype[0] in "iu" else "int64")
            low, high = max(info.min, -(2**62)), min(info.max, 2**62)
            clean = np.nan_to_num(values, nan=0.0, posinf=high, neginf=low)
            ints = np.clip(clean, low, high).astype(info.dtype)
            return ints if dtype[0] in "iu" else ints.astype(dtype)
        if dtype == "object with a string":
            out = values.astype(object)
            if out.size:
                out.flat[0] = "a"
            return out
        return values.astype(dtype)


def container_families(array: np.ndarray, dtype: str) -> list[list[str]]:
    """The containers that can hold ``array``, by family; the first family,
    a plain array, is drawn as often as all the others together."""
    dense = ["read-only", "list"]
    if array.ndim >= 2:
        dense.append("Fortran-ordered")
    if array.ndim == 2 and pd is not None:
        dense.append("DataFrame")
    families = [["ndarray"], dense]
    if array.dtype.kind != "O":
        families.append(["memmap", "read-only memmap"])
    if array.ndim == 2 and dtype in SPARSE_DTYPES:
        families.append(list(SPARSE_FORMATS))
    return families


@st.composite
def value_tables(draw, width: int) -> tuple[np.ndarray, str]:
    """A float64 table of a drawn value class, and the class's name."""
    n_rows = draw(st.sampled_from([3, 1, 0, 2, 5]))
    n_cols = draw(st.sampled_from([width, width, width, width + 1, 1, 0]))
    kind = draw(st.sampled_from(VALUE_KINDS))
    ordinary = st.integers(-80, 80).map(lambda i: i / 8)  # quick to shrink
    if kind == "all-equal rows":
        row = draw(arrays(np.float64, n_cols, elements=ordinary))
        return np.tile(row, (n_rows, 1)), kind
    if kind == "subnormal":
        tiny = st.sampled_from([0.0, *SPECIAL_VALUES["subnormal"]])
        return draw(arrays(np.float64, (n_rows, n_cols), elements=tiny)), kind
    table = draw(arrays(np.float64, (n_rows, n_cols), elements=ordinary))
    if kind in SPECIAL_VALUES and table.size:
        positions = st.integers(0, table.size - 1)
        for position in draw(st.lists(positions, min_size=1, max_size=3)):
            table.flat[position] = draw(st.sampled_from(SPECIAL_VALUES[kind]))
    return table, kind


@st.composite
def odd_inputs(draw, width: int) -> OddInput:
    """An input for a method that expects ``width`` columns: any dtype, shape,
    value class and container."""
    table, values = draw(value_tables(width))
    ndim = draw(st.sampled_from(["2-D", "2-D", "2-D", "2-D", "1-D", "3-D"]))
    if ndim == "1-D":
        table = table.ravel()
    elif ndim == "3-D":
        table = table.reshape(table.shape[0], 1, table.shape[1])
    # Half float64 or float32, the dtypes skae computes in.
    dtype = draw(st.one_of(st.sampled_from(DTYPES[:2]), st.sampled_from(DTYPES[2:])))
    array = cast(table, dtype)
    first, *others = container_families(array, dtype)
    others = st.sampled_from(others).flatmap(st.sampled_from)
    container = draw(st.one_of(st.sampled_from(first), others))
    return OddInput(array, dtype, values, container)


# ----------------------------------------------------------- calling safely

CALL_SECONDS = 20
MEMORY_HEADROOM = 4 * 2**30


class TookTooLong(Exception):
    """A single call ran longer than CALL_SECONDS."""


@contextmanager
def time_limit(seconds: float):
    """Raise TookTooLong in the main thread after ``seconds``."""

    def alarm(signum, frame):
        raise TookTooLong(f"the call ran longer than {seconds} s")

    if not hasattr(signal, "setitimer"):
        yield
        return
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def memory_limit(headroom: int = MEMORY_HEADROOM):
    """Cap the process's address space at its current size plus ``headroom``,
    so a model of 10**9 latents fails fast instead of swamping the machine."""
    if resource is None or not sys.platform.startswith("linux"):
        yield
        return
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclass
class Outcome:
    """What a call returned, or what it raised."""

    result: object = None
    error: Exception | None = None

    @property
    def label(self) -> str:
        return "accepted" if self.error is None else type(self.error).__name__


def guarded(call) -> Outcome:
    """Run ``call()`` within time and memory limits, catching what it raises."""
    with memory_limit(), time_limit(CALL_SECONDS):
        try:
            return Outcome(result=call())
        except Exception as exc:  # the tests judge every error
            return Outcome(error=exc)


def call_method(model, method: str, X):
    """``model.method(X)``; a refit continues the fitted model (warm start)."""
    if method == "fit" and hasattr(model, "warm_start"):
        model.set_params(warm_start=True)
    return getattr(model, method)(X)


class TrainingStarted(Exception):
    """An optimizer stepped while a test expected none to."""


@contextmanager
def no_training():
    """Make any optimizer step raise TrainingStarted."""

    def refuse(optimizer, args, kwargs):
        raise TrainingStarted("an optimizer step ran")

    handle = register_optimizer_step_pre_hook(refuse)
    try:
        yield
    finally:
        handle.remove()


# -------------------------------------------------------- property 1: errors

PROBLEM_WORDS = {
    "nan": r"nan",
    "inf": r"inf",
    "huge": r"diverg|overflow|large|scale|magnitude|finite|standardi",
    "dtype": r"dtype|complex|convert|string|numeric|float|real number|datetime"
    r"|timedelta|type",
    "shape": r"sample|feature|\bdim|\b[0-9]d\b|shape|empty|column|row",
}
TRAINING_FAILED = r"diverg|collaps"
# Messages that come from torch or numpy internals, not from a validation.
INTERNALS = re.compile(
    r"mat1 and mat2|\btensors?\b|expected scalar type|invalid combination of "
    r"arguments|has no attribute|out of bounds|could not broadcast|"
    r"setting an array element|DefaultCPUAllocator|enforce fail|"
    r"non-singleton dimension|negative dimension|selected index",
    re.IGNORECASE,
)
FORBIDDEN_ERRORS = (IndexError, LookupError, ArithmeticError, MemoryError)


def assert_is_clear_error(error: Exception, names: list[str], what: str) -> None:
    """``error`` is a ValueError or TypeError, not an internals error, and its
    message is a sentence that matches one of the regexes ``names``."""
    message, kind = str(error), type(error).__name__
    assert not isinstance(error, Warning), f"{what}: {kind} from skae: {message}"
    assert not isinstance(error, RuntimeError), f"{what}: raised {kind}: {message}"
    assert isinstance(error, (ValueError, TypeError)) and not isinstance(
        error, FORBIDDEN_ERRORS
    ), f"{what}: raised {kind}, not ValueError/TypeError: {message}"
    assert not INTERNALS.search(message), f"{what}: internals error: {message}"
    assert len(message.split()) >= 3, f"{what}: not a sentence: {message!r}"
    assert any(re.search(name, message, re.IGNORECASE) for name in names), (
        f"{what}: the message does not name the problem ({names}): {message}"
    )


def assert_rejected_clearly(error: Exception, problems: set[str], fit: bool) -> None:
    """A call on an input with ``problems`` failed as property 1 allows. A fit
    may also stop with an error that says its training failed (DESIGN.md: a
    run that diverges stops with an error that says so)."""
    words = [PROBLEM_WORDS[problem] for problem in sorted(problems)]
    words += [TRAINING_FAILED] if fit else []
    assert words, f"an input with no problem was rejected: {error!r}"
    assert_is_clear_error(error, words, f"input with {sorted(problems)}")


def assert_finite_float(result, shape: tuple[int, ...], float32: bool) -> None:
    """``result`` is a finite float array of ``shape``, float32 if ``float32``."""
    result = result.toarray() if sp.issparse(result) else result
    assert isinstance(result, np.ndarray), f"returned {type(result).__name__}"
    assert result.shape == shape, f"shape {result.shape}, expected {shape}"
    assert result.dtype.kind == "f", f"returned dtype {result.dtype}"
    assert np.isfinite(result).all(), f"non-finite result: {result}"
    if float32:
        assert result.dtype == np.float32, f"float32 in, {result.dtype} out"


def assert_fitted_finitely(model, n_features: int) -> None:
    """A successful fit left finite fitted attributes for ``n_features``."""
    if is_detector(model):
        assert math.isfinite(model.offset_), f"offset_ = {model.offset_}"
        model = model.estimator_
    assert model.n_features_in_ == n_features
    assert np.isfinite(model.components_).all(), "non-finite components_"
    assert np.isfinite(model.loss_curve_).all(), f"loss_curve_ {model.loss_curve_}"


def assert_good_result(model, method, result, odd: OddInput, n_out) -> None:
    """A successful call returned what the method promises, finite."""
    n_rows = odd.array.shape[0]
    float32 = odd.array.dtype == np.float32 and odd.container != "list"
    if method in ("fit", "partial_fit"):
        assert result is model, f"{method} did not return self"
        assert_fitted_finitely(model, odd.array.shape[1])
    elif method == "transform":
        assert_finite_float(result, (n_rows, n_out), float32)
    elif method == "inverse_transform":
        assert_finite_float(result, (n_rows, N_FEATURES), float32)
    elif method == "score":
        assert isinstance(result, float | np.floating), f"score is {result!r}"
        assert math.isfinite(result), f"score is {result}"
    elif method == "predict":
        assert result.shape == (n_rows,) and set(np.unique(result)) <= {-1, 1}
    else:  # score_samples, decision_function
        assert_finite_float(result, (n_rows,), float32)


# ---------------------------------------------------- property 2: no mutation


def frozen_copy(X):
    """A deep copy of ``X`` to compare with after a call, and its write flag."""
    if sp.issparse(X) or (pd is not None and isinstance(X, pd.DataFrame)):
        return X.copy(), None
    if isinstance(X, np.ndarray):
        return np.array(X, copy=True), X.flags.writeable
    return copy.deepcopy(X), None


def same(a, b) -> bool:
    """Equality that holds NaN equal to NaN, through lists and arrays."""
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, np.ndarray):
        if not (isinstance(b, np.ndarray) and a.shape == b.shape):
            return False
        if a.dtype != b.dtype:
            return False
        if a.dtype.kind in "fc":
            return np.array_equal(a, b, equal_nan=True)
        if a.dtype.kind == "O":
            return all(map(same, a.ravel(), b.ravel()))
        return np.array_equal(a, b)
    try:
        return bool(a == b) or bool(a != a and b != b)  # NaN of any number type
    except (TypeError, ValueError):
        return False


def sparse_parts(X) -> list:
    """The arrays that make up sparse matrix ``X`` in its own format."""
    if X.format == "dok":
        return sorted(X.items())
    if X.format == "lil":
        return [list(map(list, X.rows)), list(map(list, X.data))]
    if X.format == "coo":
        return [X.row, X.col, X.data]
    if X.format == "dia":
        return [X.offsets, X.data]
    return [X.indptr, X.indices, X.data]  # csr, csc, bsr


def assert_not_modified(X, before) -> None:
    """``X`` holds what it held before the call (property 2)."""
    saved, writeable = before
    if sp.issparse(X):
        assert type(X) is type(saved) and X.shape == saved.shape
        assert X.dtype == saved.dtype, f"sparse dtype {saved.dtype} -> {X.dtype}"
        assert same(sparse_parts(X), sparse_parts(saved)), "sparse input modified"
    elif pd is not None and isinstance(X, pd.DataFrame):
        assert list(X.dtypes) == list(saved.dtypes), "DataFrame dtypes changed"
        assert X.equals(saved), "DataFrame modified"
    elif isinstance(X, np.ndarray):
        assert X.flags.writeable == writeable, "the array's write flag changed"
        assert same(np.asarray(X), saved), "array modified in place"
    else:
        assert same(X, saved), "list modified in place"


# ------------------------------------------------ property 3: model unchanged


def model_state(model) -> dict:
    """What a failed call must leave exactly as it was."""
    if is_detector(model):
        return {
            "offset_": model.offset_,
            "n_features_in_": model.n_features_in_,
            "estimator_": model_state(model.estimator_),
        }
    return {
        "components_": model.components_.copy(),
        "module_": {
            key: value.detach().clone()
            for key, value in model.module_.state_dict().items()
        },
        "n_iter_": model.n_iter_,
        "loss_curve_": list(model.loss_curve_),
        "n_features_in_": model.n_features_in_,
    }


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and values, NaN equal to NaN (an unused threshold is NaN)."""
    both_nan = a.isnan() & b.isnan() if a.is_floating_point() else False
    return a.shape == b.shape and bool(((a == b) | both_nan).all())


def assert_same_state(state: dict, before: dict, where: str = "") -> None:
    """``state`` (from :func:`model_state`) equals ``before`` exactly."""
    assert state.keys() == before.keys(), f"{where} attributes changed"
    for name, value in state.items():
        old, place = before[name], f"{where}{name}"
        if isinstance(value, dict) and name != "module_":
            assert_same_state(value, old, f"{place}.")
        elif name == "module_":
            assert value.keys() == old.keys(), f"{place} keys changed"
            for key, tensor in value.items():
                assert tensor.dtype == old[key].dtype, f"{place}.{key} dtype"
                assert same_tensor(tensor, old[key]), f"{place}.{key} changed"
        elif isinstance(value, np.ndarray):
            assert np.array_equal(value, old), f"{place} changed"
        else:
            assert value == old, f"{place} changed: {old!r} -> {value!r}"


# ---------------------------------------------------------- events and notes


def quiet_repr(X) -> str:
    """``repr(X)`` without the overflow warnings pandas gives for huge values."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return repr(X)


def record(method: str, odd: OddInput, width: int | None, outcome: Outcome) -> None:
    """Tell --hypothesis-show-statistics how each class of input fared."""
    event(f"method {method}: {outcome.label}")
    event(f"dtype {odd.dtype}: {outcome.label}")
    event(f"container {odd.container}: {outcome.label}")
    event(f"shape {odd.shape_label(width)}: {outcome.label}")
    event(f"values {odd.values}: {outcome.label}")


# ================================================================== tests


@pytest.fixture(scope="module")
def memmap_dir(tmp_path_factory):
    """The folder for every example's memmaps: module-scoped, because the
    examples of one test would share a function-scoped folder unawares."""
    return tmp_path_factory.mktemp("memmaps")


@pytest.mark.parametrize("name", ESTIMATORS)
@given(data=st.data())
def test_fit_on_odd_input_learns_or_fails_clearly(memmap_dir, name, data):
    """Properties 1 and 2 for ``fit`` and ``partial_fit`` of an unfitted model:
    a clear ValueError/TypeError, or a model with finite fitted attributes;
    the input unchanged either way."""
    fits = [m for m in ("fit", "partial_fit") if m in methods_of(name)]
    method = data.draw(st.sampled_from(fits), label="method")
    odd = data.draw(odd_inputs(N_FEATURES), label="input")
    X = odd.build(memmap_dir)
    note(f"built input: {quiet_repr(X)}")
    before = frozen_copy(X)
    model = ESTIMATORS[name]()

    outcome = guarded(lambda: getattr(model, method)(X))
    record(method, odd, None, outcome)

    assert not isinstance(outcome.error, TookTooLong), outcome.error
    assert_not_modified(X, before)
    if outcome.error is not None:
        assert_rejected_clearly(outcome.error, odd.problems(None), fit=True)
    else:
        assert_good_result(model, method, outcome.result, odd, None)


@pytest.mark.parametrize("name", ESTIMATORS)
@given(data=st.data())
def test_fitted_model_survives_odd_input(memmap_dir, name, data):
    """Properties 1, 2 and 3 for every method of a model fitted on good data
    (``fit`` with warm_start=True): a clear error or a finite result of the
    right shape and dtype; the input unchanged; after an error, and after
    any inference, the model exactly as it was."""
    method = data.draw(st.sampled_from(methods_of(name)), label="method")
    model, n_out, n_in = fitted(name)
    width = n_in if method == "inverse_transform" else N_FEATURES
    odd = data.draw(odd_inputs(width), label="input")
    X = odd.build(memmap_dir)
    note(f"built input: {quiet_repr(X)}")
    before, state = frozen_copy(X), model_state(model)

    outcome = guarded(lambda: call_method(model, method, X))
    record(method, odd, width, outcome)

    assert not isinstance(outcome.error, TookTooLong), outcome.error
    assert_not_modified(X, before)
    if outcome.error is not None or method in INFERENCE:
        assert_same_state(model_state(model), state)
    if outcome.error is not None:
        fit = method in ("fit", "partial_fit")
        assert_rejected_clearly(outcome.error, odd.problems(width), fit)
    else:
        assert_good_result(model, method, outcome.result, odd, n_out)


# ------------------------------------------------------- hyperparameters

BOOLEAN = ["True", 1, 0, None, [True]]


def bad_ints(low: int = 1) -> list:
    """Invalid values for an integer parameter that must be >= ``low``."""
    wrong_types = [1.5, float(low + 1), True, "2", None, [2]]
    return [low - 1, -(10**18), math.nan, math.inf, *wrong_types]


def bad_reals(low, high=None, *, low_open=False, high_open=False) -> list:
    """Invalid values for a real parameter in the given interval."""
    bad = [low - 1, math.nan, math.inf, -math.inf, True, 1j, "0.5", None, [0.5]]
    bad += [float(low)] if low_open else []
    if high is not None:
        bad += [high + 0.5] + ([float(high)] if high_open else [])
    return bad


def bad_options(*valid: str) -> list:
    return ["banana", valid[0].upper(), "", None, 1, True]


COMMON_PARAMS = {
    "learning_rate": bad_reals(0, low_open=True),
    "batch_size": bad_ints(),
    "max_iter": bad_ints(),
    "tol": bad_reals(0),
    "n_iter_no_change": bad_ints(),
    "early_stopping": BOOLEAN,
    "validation_fraction": bad_reals(0, 1, low_open=True, high_open=True),
    "warm_start": BOOLEAN,
    "device": ["banana", "tpu", "", 3, None, True],
    "precision": ["float16", "bf16", "", None, 16],
    "random_state": [-1, 2**32, 1.5, "0", [0]],
    "verbose": [-1, 1.5, "1", None, [1]],
    "checkpoint_path": [3, True, 1.5, ["model.pt"]],
    "checkpoint_interval": [0, -1, 1.5, 0.0, math.nan, math.inf, "1", None, True],
}
DICTIONARY_PARAMS = {
    "dictionary": bad_options("free", "archetypal"),
    "relaxation": bad_reals(0),
}
KSPARSE_PARAMS = {
    "n_components": bad_ints(),
    "k": [*bad_ints(), 5],  # 5 > n_components
    "aux_k": [*bad_ints(0), "banana"],
    "aux_k_coef": bad_reals(0),
    "normalize_input": BOOLEAN,
    "k_mode": bad_options("row", "batch"),
    "encoder": bad_options("linear", "mp", "omp"),
    "matryoshka_sizes": [[0], [3, 2], [2, 2], [5], [], [1.5], "2", [True]],
    "sparse_output": BOOLEAN,
    **DICTIONARY_PARAMS,
}
SPARSITY_TARGET = bad_reals(0, 1, low_open=True, high_open=True)
STACKED_PER_LAYER = {  # lists are valid types here: one value per layer
    "kl": {
        "sparsity_target": [[0.5, 1.5], [0.1], [math.nan, 0.1]],
        "sparsity_weight": [[-1, 1], [1, 2, 3]],
    },
    "l1": {"alpha": [[-1, 0.1], [0.1], [math.inf, 0.1]]},
    "l2": {"alpha": [[-1, 0.1], [0.1], [math.inf, 0.1]]},
    "topk": {"k": [[1], [0, 1], [1, 3], [1.5, 1], [True, 1]]},
}
PARAMS = {
    "KSparse": KSPARSE_PARAMS,
    "L1": {"n_components": bad_ints(), "alpha": bad_reals(0), **DICTIONARY_PARAMS},
    "L2": {"n_components": bad_ints(), "alpha": bad_reals(0), **DICTIONARY_PARAMS},
    "KL": {
        "n_components": bad_ints(),
        "sparsity_target": SPARSITY_TARGET,
        "sparsity_weight": bad_reals(0),
        "sparsity_loss": bad_options("kl", "l1", "l2"),
        "weight_decay": bad_reals(0),
        "output_activation": bad_options("identity", "sigmoid"),
        **DICTIONARY_PARAMS,
    },
    "JumpReLU": {
        "n_components": bad_ints(),
        "sparsity_weight": bad_reals(0),
        "bandwidth": bad_reals(0, low_open=True),
        "initial_threshold": [*bad_reals(0, low_open=True), "banana"],
        **DICTIONARY_PARAMS,
    },
    "Conv": {
        "image_shape": [
            [0, 4],
            (3, 3),
            (4,),
            (1, 2, 2, 1),
            (2, 2, 2),
            "22",
            [2.0, 2.0],
            [True, 4],
        ],
        "n_components": bad_ints(),
        "kernel_size": [*bad_ints(), 2, 4],
        "sparsity": bad_options("wta", "l1", "l2", "kl"),
        "k": bad_ints(),
        "lifetime_sparsity": bad_reals(0, 1, low_open=True),
        "pool_size": [0, -1, 1.5, "2", True, [2]],
        "alpha": bad_reals(0),
        "sparsity_target": SPARSITY_TARGET,
        "sparsity_weight": bad_reals(0),
    },
    "OutlierDetector": {
        "contamination": [*bad_reals(0, 0.5, low_open=True), "high"],
        "estimator": ["KSparseAutoencoder", 3, KSparseAutoencoder, [None]],
        **{f"estimator__{p}": v for p, v in (KSPARSE_PARAMS | COMMON_PARAMS).items()},
    },
}
for _sparsity, _per_layer in STACKED_PER_LAYER.items():
    # A list gives one value per layer: the active rule's lists of the wrong
    # length are drawn below, and the other rules' values go unused.
    _scalars = {
        "sparsity_target": SPARSITY_TARGET,
        "sparsity_weight": bad_reals(0),
        "alpha": bad_reals(0),
        "k": bad_ints(),
    }
    PARAMS[f"Stacked({_sparsity})"] = {
        "hidden_layer_sizes": [[], [0], [-1, 2], [2.5], "4", None, [True, 2], 4.0],
        "sparsity": bad_options("kl", "l1", "l2", "topk"),
        **{
            name: [v for v in values if not isinstance(v, list)]
            + _per_layer.get(name, [])
            for name, values in _scalars.items()
        },
        "layer_weights": [-1, math.nan, math.inf, "1", True, [1], [-1, 1]],
        "weight_decay": bad_reals(0),
        "output_activation": bad_options("identity", "sigmoid"),
        "pretrain": BOOLEAN,
        "fine_tune": BOOLEAN,
    }
for _name in PARAMS:
    if _name != "OutlierDetector":
        PARAMS[_name] = COMMON_PARAMS | PARAMS[_name]


def value_class(value) -> str:
    """A short name for the kind of a bad hyperparameter value."""
    if isinstance(value, bool):
        return "bool"
    if value is None or isinstance(value, str | list | tuple | complex | type):
        return type(value).__name__
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float) and value == int(value):
        return "integral float"
    return "negative" if value < 0 else "zero" if value == 0 else "out of range"


@st.composite
def bad_hyperparameters(draw, name: str):
    """(parameter, bad value) for estimator ``name``."""
    param = draw(st.sampled_from(sorted(PARAMS[name])))
    return param, draw(st.sampled_from(PARAMS[name][param]))


@pytest.mark.parametrize("name", ESTIMATORS)
@given(data=st.data())
def test_bad_hyperparameter_is_rejected_before_training(name, data):
    """Property 4: a wrong-typed or out-of-range hyperparameter gives a
    ValueError/TypeError that names it, at fit, before any optimizer step
    and without a warning."""
    param, value = data.draw(bad_hyperparameters(name), label="parameter")
    model = ESTIMATORS[name]().set_params(**{param: value})
    named = param.rsplit("__", 1)[-1]

    with no_training(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = guarded(lambda: model.fit(GOOD_X))
    event(f"{param}: {outcome.label}")
    event(f"value {value_class(value)}: {outcome.label}")

    accepted = outcome.error is None or isinstance(outcome.error, TrainingStarted)
    assert not (accepted and isinstance(value, bool)), (
        f"{param}={value!r}: a boolean was taken for a number and training started"
    )
    assert not accepted, f"{param}={value!r} was accepted: training started"
    assert not isinstance(outcome.error, TookTooLong), outcome.error
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    assert_is_clear_error(
        outcome.error, [rf"\b{re.escape(named)}\b"], f"{param}={value!r}"
    )


HUGE = [10**9, 10**18]
HUGE_PARAMS = {
    "KSparse": ["n_components", "k", "batch_size", "max_iter"],
    "L1": ["n_components", "batch_size", "max_iter"],
    "L2": ["n_components", "batch_size", "max_iter"],
    "KL": ["n_components", "batch_size", "max_iter"],
    "JumpReLU": ["n_components", "batch_size", "max_iter"],
    "Stacked(kl)": ["hidden_layer_sizes", "batch_size", "max_iter"],
    "Stacked(l1)": ["hidden_layer_sizes", "batch_size", "max_iter"],
    "Stacked(l2)": ["hidden_layer_sizes", "batch_size", "max_iter"],
    "Stacked(topk)": ["hidden_layer_sizes", "k", "batch_size", "max_iter"],
    "Conv": ["n_components", "k", "batch_size", "max_iter"],
    "OutlierDetector": [
        f"estimator__{p}" for p in ("n_components", "k", "batch_size", "max_iter")
    ],
}


@st.composite
def huge_hyperparameters(draw, name: str):
    """(parameter, huge value) for estimator ``name``."""
    param = draw(st.sampled_from(HUGE_PARAMS[name]))
    value = draw(st.sampled_from(HUGE))
    if param == "hidden_layer_sizes":
        value = draw(st.sampled_from([(value,), (4, value), (value, 2)]))
    return param, value


@pytest.mark.parametrize("name", ESTIMATORS)
@given(data=st.data())
def test_huge_hyperparameter_trains_or_is_refused_clearly(name, data):
    """Properties 1 and 4 for huge sizes and counts (10**9, 10**18): the fit
    either trains a finite model in bounded time and memory, or raises a
    ValueError/TypeError that names the parameter; never a MemoryError, an
    OverflowError or a torch RuntimeError. Training stops as soon as the loss
    stops halving, so that max_iter=10**18 ends."""
    param, value = data.draw(huge_hyperparameters(name), label="parameter")
    model = ESTIMATORS[name]()
    stop = {"tol": 0.5, "n_iter_no_change": 1}
    prefix = "estimator__" if is_detector(model) else ""
    model.set_params(**{prefix + key: v for key, v in stop.items()})
    model.set_params(**{param: value})
    named = param.rsplit("__", 1)[-1]

    outcome = guarded(lambda: model.fit(GOOD_X))
    event(f"{param}={value}: {outcome.label}")

    assert not isinstance(outcome.error, TookTooLong), outcome.error
    if outcome.error is None:
        assert_fitted_finitely(model, N_FEATURES)
    else:
        assert_is_clear_error(
            outcome.error, [rf"\b{re.escape(named)}\b"], f"{param}={value!r}"
        )
