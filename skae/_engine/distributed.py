"""Training one model on several processes with torch.distributed (DDP).

skae never starts processes itself: ``torchrun`` (or any launcher) does, and
calls ``torch.distributed.init_process_group``. When a process group of more
than one process is initialized, ``fit`` shards the training rows by rank,
wraps the module in :class:`~torch.nn.parallel.DistributedDataParallel`, and
reduces what the stopping rule and the fitted attributes need, so that every
process ends with the same weights.
"""

from __future__ import annotations

import gc
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


class World(NamedTuple):
    """This process's rank among ``size`` processes."""

    rank: int
    size: int


def current_world() -> World | None:
    """The initialized process group, or None when training on one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    size = dist.get_world_size()
    return World(dist.get_rank(), size) if size > 1 else None


def is_main_process() -> bool:
    """True on rank 0, and when not distributed: the process that writes files."""
    world = current_world()
    return world is None or world.rank == 0


def sum_across(tensor: Tensor) -> Tensor:
    """``tensor`` summed over all processes (itself when not distributed)."""
    if current_world() is None:
        return tensor
    # NCCL reduces CUDA tensors only; gloo reduces both.
    on_gpu = dist.get_backend() == "nccl" and not tensor.is_cuda
    total = tensor.to("cuda", copy=True) if on_gpu else tensor.clone()
    dist.all_reduce(total)
    return total.to(tensor.device)


def parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped for data-parallel training (itself when alone).

    DDP broadcasts rank 0's weights at construction and averages gradients
    in every backward pass; its buffers (such as the counts of rows since a
    latent fired) follow rank 0's at every forward.
    """
    if current_world() is None:
        return module
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def release_parallel() -> None:
    """Free the DDP wrapper of a finished training run now, while its
    process group lives.

    DDP's hooks hold reference cycles, so the wrapper waits for the garbage
    collector; collected after ``destroy_process_group``, as at interpreter
    exit, an interrupted run's wrapper aborted the process ("terminate
    called without an active exception", 2 runs in 5 of the 2-process test).
    """
    if current_world() is not None:
        gc.collect()


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper."""
    return module.module if isinstance(module, DistributedDataParallel) else module
