"""Checkpoints: a training run saved to one file, and resumed from it.

A checkpoint is a safetensors file (:mod:`.serialize`): the weights, Adam's
moments and the loop's tensors as tensors, everything else as JSON in its
header. Loading one never runs code from it, whoever wrote it.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, fields

import numpy as np
import scipy.sparse as sp

from .serialize import FileFormatError, load_tree, save_tree
from .training import LoopState

KIND = ("skae.checkpoint", "checkpoint")  # format, and metadata key of the JSON
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What a fit needs to resume: the module's state (from
    :func:`.serialize.module_state`), Adam's state, the loop's state, the
    shuffling stream, the training and validation rows, and a fingerprint
    of the estimator and data."""

    module: dict
    optimizer: dict
    loop: object
    rng: np.random.RandomState
    rows: tuple
    fingerprint: dict


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically: a crash mid-write leaves the old file."""
    tree = {field.name: getattr(checkpoint, field.name) for field in fields(Checkpoint)}
    save_tree(path, tree, KIND, FORMAT_VERSION)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, onto the CPU.

    Raises ValueError, naming ``path``, for any file that is not a skae
    checkpoint this version can read; nothing in the file is executed.
    """
    try:
        checkpoint = Checkpoint(**load_tree(path, KIND, FORMAT_VERSION))
        _check_types(checkpoint)
        return checkpoint
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = _old_format_reason(path) or str(exc)
    except (RecursionError, RuntimeError) as exc:  # nesting, values torch refuses
        reason = type(exc).__name__
    raise ValueError(
        f"checkpoint_path={str(path)!r} exists but is not a skae checkpoint "
        f"({reason}); delete it or choose another path."
    )


def _check_types(checkpoint: Checkpoint) -> None:
    """Refuse a checkpoint whose parts are not what a resume reads."""
    module = checkpoint.module
    is_table = isinstance(module, dict)  # then its parts are checked too
    expected = [
        (is_table, "module"),
        (not is_table or isinstance(module.get("tensors"), dict), "module tensors"),
        (
            not is_table or isinstance(module.get("attributes"), dict),
            "module attributes",
        ),
        (isinstance(checkpoint.optimizer, dict), "optimizer"),
        (isinstance(checkpoint.loop, LoopState), "loop"),
        (isinstance(checkpoint.rng, np.random.RandomState), "rng"),
        (isinstance(checkpoint.rows, tuple) and len(checkpoint.rows) == 2, "rows"),
        (isinstance(checkpoint.fingerprint, dict), "fingerprint"),
    ]
    wrong = [name for ok, name in expected if not ok]
    if wrong:
        raise FileFormatError(f"its {', '.join(wrong)} are not as skae writes them")


def _old_format_reason(path: str | os.PathLike) -> str | None:
    """Why a checkpoint of skae before 0.1 (a torch pickle) is refused."""
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        return (
            "it is a pickle, as skae wrote checkpoints before, and loading a "
            "pickle runs code from the file, so skae no longer reads them"
        )
    return None


# ------------------------------------------------------------ fingerprints

SAMPLE_BYTES = 16 * 2**20


def data_fingerprint(X) -> dict:
    """What identifies training data without reading all of it: its shape,
    dtype and a hash of a fixed sample of rows (every row up to
    :data:`SAMPLE_BYTES` of them, else rows evenly spread over X).

    ``X`` is a numpy array, memmap or CSR matrix.
    """
    n_rows, n_features = X.shape
    row_bytes = max(1, n_features) * X.dtype.itemsize
    n_sample = min(n_rows, max(1, SAMPLE_BYTES // row_bytes))
    rows = np.unique(np.linspace(0, n_rows - 1, n_sample).round().astype(np.int64))
    digest = hashlib.sha256()
    step = max(1, 2**20 // row_bytes)
    for start in range(0, len(rows) if n_rows else 0, step):
        sample = X[rows[start : start + step]]
        dense = sample.toarray() if sp.issparse(sample) else np.asarray(sample)
        digest.update(np.ascontiguousarray(dense).tobytes())
    return {
        "shape": [int(n_rows), int(n_features)],
        "dtype": str(X.dtype),
        "sample_sha256": digest.hexdigest(),
    }
