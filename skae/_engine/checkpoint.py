"""Checkpoints: a training run saved to one file, and resumed from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .device import cpu_copy
from .training import LoopState


@dataclass
class Checkpoint:
    """What a fit needs to resume: the module, Adam's state, the loop's state,
    the shuffling stream, the training and validation rows, and a
    fingerprint of the estimator and data."""

    module: nn.Module
    optimizer: dict
    loop: LoopState
    rng: np.random.RandomState
    rows: tuple
    fingerprint: dict


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically: a crash mid-write leaves the old file."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    saved = {
        name: getattr(checkpoint, name) for name in Checkpoint.__dataclass_fields__
    }
    saved["module"] = cpu_copy(checkpoint.module)
    try:
        torch.save(saved, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, onto the CPU.

    The file is a pickle (the module and the random stream are objects), so,
    like a joblib model, it must come from a trusted source.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        return Checkpoint(**saved)
    except Exception as exc:
        raise ValueError(
            f"checkpoint_path={str(path)!r} exists but is not a skae checkpoint "
            f"({type(exc).__name__}: {exc}); delete it or choose another path."
        ) from exc
