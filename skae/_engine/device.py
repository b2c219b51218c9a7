"""Devices and threads."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch
from threadpoolctl import ThreadpoolController


def resolve_device(device: str | torch.device, *, for_training: bool) -> torch.device:
    """The torch device that ``device`` names on this machine.

    ``'auto'`` is CUDA when available, else the CPU. An explicit CUDA device
    that this machine lacks is an error when training; when predicting with a
    model loaded on a CPU-only machine it falls back to the CPU with a
    warning, so a model fit on a GPU still transforms anywhere.
    """
    resolved, problem = _resolve(device)
    if problem is None:
        return resolved
    if for_training:
        raise ValueError(f"{problem}; use device='auto' or device='cpu'.")
    warnings.warn(f"{problem}; using the CPU instead.", RuntimeWarning, stacklevel=3)
    return resolved


def inference_device(device: str | torch.device) -> torch.device:
    """The device that :func:`resolve_device` predicts on, without its warning."""
    return _resolve(device)[0]


def _resolve(device: str | torch.device) -> tuple[torch.device, str | None]:
    """The device to use, and what is wrong with the one asked for, if anything."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a device torch knows; use 'auto', 'cpu', "
            "'cuda' or 'cuda:N'."
        ) from exc
    if resolved.type != "cuda":
        return resolved, None
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = 0 if resolved.index is None else resolved.index
    if index < n_gpus:
        return resolved, None
    problem = (
        f"device={device!r} was requested but this machine has {n_gpus} CUDA device(s)"
    )
    return torch.device("cpu"), problem


@cache
def _controller() -> ThreadpoolController:
    # Finding the loaded OpenMP and BLAS libraries takes milliseconds; asking
    # the ones found for their thread counts takes microseconds.
    return ThreadpoolController()


def thread_budget() -> int:
    """Threads torch may use here, honouring joblib and threadpoolctl limits.

    joblib's worker processes get ``OMP_NUM_THREADS`` and friends set to their
    share of the cores, and ``threadpoolctl.threadpool_limits`` lowers the
    OpenMP and BLAS pools of the current process; torch follows the smallest
    of these so that ``GridSearchCV(n_jobs=...)`` does not oversubscribe.
    """
    limits = [torch.get_num_threads()]
    for pool in _controller().info():
        if pool.get("user_api") in ("openmp", "blas") and pool.get("num_threads"):
            limits.append(int(pool["num_threads"]))
    return max(1, min(limits))


#: Multiply-adds of one batch below which torch runs on one thread.
SMALL_WORK = 2**24


@contextmanager
def limited_threads(work: int | None = None) -> Iterator[int]:
    """Run torch with :func:`thread_budget` threads, restoring the count after.

    With ``work`` (the multiply-adds of one batch) below :data:`SMALL_WORK`,
    one thread: there a second thread saved about 20% on a quiet 2-core
    machine (a 128-latent model of 100 features at batch 256), and cost 30
    times more when another process kept the cores busy, as its threads
    wait for each other at every operator.
    """
    before = torch.get_num_threads()
    budget = 1 if work is not None and work < SMALL_WORK else thread_budget()
    # Set even when torch reports the budget already: threadpoolctl lowers
    # the OpenMP pool that torch reports, not the MKL inside torch, whose
    # products would go on with the count torch last set (0.2 us a call).
    torch.set_num_threads(budget)
    try:
        yield budget
    finally:
        torch.set_num_threads(before)


def module_copy(
    module: torch.nn.Module,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """A copy of ``module`` with every tensor moved to ``device`` and ``dtype``.

    Each tensor is converted in one step: a deep copy followed by ``.to()``
    would first duplicate a large model where it is.
    """

    def convert(tensor: torch.Tensor) -> torch.Tensor:
        converted = tensor.detach().to(device=device, dtype=dtype, copy=True)
        if isinstance(tensor, torch.nn.Parameter):
            return torch.nn.Parameter(converted, requires_grad=tensor.requires_grad)
        return converted

    memo = {id(t): convert(t) for t in [*module.parameters(), *module.buffers()]}
    return copy.deepcopy(module, memo)


def cpu_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` with every parameter and buffer on the CPU."""
    return module_copy(module, device="cpu")


def available_memory(device: torch.device) -> int | None:
    """Bytes that a new allocation on ``device`` can take, or None if unknown.

    On the CPU, the kernel's estimate of memory available without swapping
    (``MemAvailable``), capped by the free part of a cgroup's memory limit;
    on CUDA, the device's free memory plus what torch's allocator holds
    unused.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(
            device
        )
        return int(free + cached)
    if device.type != "cpu":
        return None
    candidates = [_meminfo_available(), _cgroup_headroom()]
    known = [c for c in candidates if c is not None]
    return min(known) if known else _sysconf_available()


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, else v1). The
    usage counts the page cache, which the kernel reclaims before it runs
    out: its inactive part (a file just read, say) is counted as free."""
    for folder, limit_name, usage_name, cache_name in (
        ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
        (
            "/sys/fs/cgroup/memory",
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            "total_inactive_file",
        ),
    ):
        try:
            with open(f"{folder}/{limit_name}") as limit:
                text = limit.read().strip()
            if text == "max":
                return None
            with open(f"{folder}/{usage_name}") as usage:
                used = int(usage.read().strip())
            return max(0, int(text) - used + _stat(f"{folder}/memory.stat", cache_name))
        except (OSError, ValueError):
            continue
    return None


def _stat(path: str, name: str) -> int:
    """The value of ``name`` in a cgroup's memory.stat, or 0."""
    try:
        with open(path) as stats:
            for line in stats:
                key, _, value = line.partition(" ")
                if key == name:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
