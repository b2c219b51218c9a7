"""Saving and loading estimators without pickle: :func:`save` and :func:`load`."""

from __future__ import annotations

import os
from collections import ChainMap
from dataclasses import dataclass

import torch
from sklearn.base import BaseEstimator, clone

from ._base import BaseSparseAutoencoder
from ._engine.serialize import (
    FileFormatError,
    is_safetensors,
    load_tree,
    module_state,
    read_metadata,
    restore_module,
    save_tree,
    storable,
)
from ._outlier import SparseAutoencoderOutlierDetector

KIND = ("skae.estimator", "estimator")  # format, and metadata key of the JSON
FORMAT_VERSION = 1

#: The estimators a file may name, skae's own (every subclass of
#: BaseSparseAutoencoder that skae defines registers itself); loading creates
#: no other class.
ESTIMATORS = ChainMap(
    BaseSparseAutoencoder._skae_estimators,
    {SparseAutoencoderOutlierDetector.__name__: SparseAutoencoderOutlierDetector},
)


@storable
@dataclass
class StoredEstimator:
    """An estimator as stored: its class name, its attributes (parameters
    and fitted state) and its torch module's state, if fitted."""

    name: str
    state: dict
    module: dict | None


def save(estimator: BaseEstimator, path: str | os.PathLike) -> None:
    """Save a skae estimator to a file that loads without pickle.

    The file is a `safetensors <https://huggingface.co/docs/safetensors>`_
    file: the weights, Adam's moments and every fitted array are tensors, and
    the estimator's class, parameters and other fitted attributes are JSON in
    its header. :func:`load` reads it back on any machine, GPU or not, and
    no code in the file can run when it is read, unlike a pickle or joblib
    file. The file is written to a temporary beside ``path`` and renamed, so
    a crash never leaves half a file; an existing ``path`` is replaced only
    if it is itself a skae model file.

    Parameters
    ----------
    estimator : estimator
        A skae estimator (any of skae's classes, fitted or not; the outlier
        detector when its inner estimator is skae's).
    path : str or path-like
        The file to write, by convention with the suffix ``.skae``.

    Raises
    ------
    TypeError
        If ``estimator`` is not skae's, or holds something that cannot be
        stored without pickle.
    FileExistsError
        If ``path`` exists and is not a skae model file.

    See Also
    --------
    load : Read the file back.

    Examples
    --------
    >>> import os, tempfile
    >>> from sklearn.datasets import load_digits
    >>> import skae
    >>> X = load_digits().data / 16
    >>> sae = skae.KSparseAutoencoder(32, k=4, max_iter=5, random_state=0).fit(X)
    >>> path = os.path.join(tempfile.mkdtemp(), "digits.skae")
    >>> skae.save(sae, path)
    >>> loaded = skae.load(path)
    >>> bool((loaded.transform(X) == sae.transform(X)).all())
    True
    """
    if os.path.lexists(path) and not _is_model_file(path):
        raise FileExistsError(
            f"{str(path)!r} exists and is not a skae model file; skae.save "
            "replaces only its own files. Delete it or choose another path."
        )
    save_tree(
        path,
        _stored(estimator),
        KIND,
        FORMAT_VERSION,
        estimator_class=type(estimator).__name__,
        skae_version=_version(),
        torch_version=torch.__version__,
    )


def load(path: str | os.PathLike) -> BaseEstimator:
    """Load an estimator saved by :func:`save`, without unpickling anything.

    Only skae's estimator classes, plain data and tensors are built from the
    file, so a file from anyone is safe to read: nothing in it runs. The
    model loads onto the CPU; it predicts on the device its ``device``
    parameter names where that device exists, and on the CPU elsewhere.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.

    Returns
    -------
    estimator : estimator
        The estimator as it was saved, fitted if it was.

    Raises
    ------
    ValueError
        If the file is not a skae model file, is damaged, or was written by
        a newer skae that this version cannot read.

    See Also
    --------
    save : Write the file.

    Examples
    --------
    >>> import os, tempfile
    >>> import skae
    >>> path = os.path.join(tempfile.mkdtemp(), "unfitted.skae")
    >>> skae.save(skae.L1SparseAutoencoder(64, alpha=0.5), path)
    >>> skae.load(path)
    L1SparseAutoencoder(alpha=0.5, n_components=64)
    """
    try:
        stored = load_tree(path, KIND, FORMAT_VERSION)
        return _rebuilt(stored)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = str(exc)
    except (RecursionError, RuntimeError) as exc:  # nesting, values torch refuses
        reason = type(exc).__name__
    raise ValueError(f"{str(path)!r} is not a skae model file that loads: {reason}")


def _is_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file :func:`save` wrote (only its header is read)."""
    if not is_safetensors(path):
        return False
    try:
        return read_metadata(path).get("format") == KIND[0]
    except FileFormatError:
        return False


def _version() -> str:
    from . import __version__

    return __version__


def _stored(estimator: BaseEstimator) -> StoredEstimator:
    name = type(estimator).__name__
    if ESTIMATORS.get(name) is not type(estimator):
        raise TypeError(
            f"skae.save stores skae's own estimators, not a {name}; save it with "
            "joblib (whose files run code when loaded) or skops.io instead."
        )
    state = {
        key: _stored(value) if isinstance(value, BaseEstimator) else value
        for key, value in vars(estimator).items()
        if key != "module_"
    }
    module = vars(estimator).get("module_")
    return StoredEstimator(
        name, state, None if module is None else module_state(module)
    )


def _rebuilt(stored: StoredEstimator) -> BaseEstimator:
    if not isinstance(stored, StoredEstimator):
        raise FileFormatError("it holds no estimator")
    cls = ESTIMATORS.get(stored.name)
    if cls is None:
        raise FileFormatError(f"it names an unknown estimator, {stored.name!r}")
    estimator = cls()
    if not isinstance(stored.state, dict):
        raise FileFormatError("its estimator's state is not a table")
    for key, value in stored.state.items():
        _check_estimator_attribute(estimator, key)
        vars(estimator)[key] = (
            _rebuilt(value) if isinstance(value, StoredEstimator) else value
        )
    if stored.module is not None:
        if not isinstance(estimator, BaseSparseAutoencoder):
            raise FileFormatError(f"a {stored.name} has no torch module")
        estimator.module_ = restore_module(_skeleton(estimator), stored.module)
    return estimator


#: The private attributes of a fitted estimator; the rest are parameters and
#: fitted attributes (named with a trailing underscore).
_PRIVATE_STATE = {
    "_optimizer_state",
    "_random_state",
    "_fitted_architecture",
    "_sklearn_output_config",
}


def _check_estimator_attribute(estimator: BaseEstimator, key: str) -> None:
    """Refuse a stored attribute that is neither a parameter, nor a fitted
    attribute, nor known private state, or that would hide a method."""
    known = (
        key in estimator.get_params(deep=False)
        or key in _PRIVATE_STATE
        or (key.endswith("_") and not key.startswith("_") and key != "module_")
    )
    if not known or callable(getattr(type(estimator), key, None)):
        raise FileFormatError(f"the estimator's attribute {key!r} cannot be set")


def _skeleton(estimator: BaseSparseAutoencoder) -> torch.nn.Module:
    """An empty module (on the meta device) of the fitted model's shape."""
    try:
        shaped = clone(estimator).set_params(**estimator._fitted_architecture)
        return shaped._empty_module(estimator.n_features_in_)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"its model cannot be rebuilt ({exc})") from None
