"""Speed and memory sections of skae's benchmark suite.

* :func:`throughput`       KSparseAutoencoder training rows/s, through ``fit``
  and through a bare step loop, as a fraction of the machine's bound;
* :func:`transform_speed`  transform rows/s vs PCA.transform and OMP;
* :func:`kernels`          the CPU choices of the top-k kernels, side by side;
* :func:`memory`           peak RSS of a streamed memmap fit vs an in-RAM fit;
* :func:`gpu`              training rows/s and memory on CUDA (skipped without).

Each returns ``(markdown report, JSON-serializable raw figures)``.

The bound of a step is the machine's float32 matrix-product rate, measured in
the same run on the encoder's own shape with the same threads, divided by the
floating-point operations a row truly needs. For a top-k autoencoder only the
encoder's forward is dense, ``2 d width``; the rest touches the ``k`` kept
latents: decoder forward, decoder backward to ``W_dec`` and to the kept
values, encoder backward to ``W_enc`` and to the input (which ``b_dec``'s
gradient needs), ``2 k d`` each. So a training row needs ``2 d width + 10 k d``
and a transformed row ``2 d width`` (top-k selection counted as no work).
"""

from __future__ import annotations

import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import markdown
from sklearn.decomposition import PCA, SparseCoder
from threadpoolctl import threadpool_limits

import skae._base
from skae import KSparseAutoencoder
from skae._engine import topk as topk_module
from skae._engine.device import limited_threads, thread_budget
from skae._engine.modules import LinearAutoencoder, TopKAutoencoder, tied_init
from skae._engine.precision import products_in
from skae._engine.rules import TopK
from skae._engine.training import adam, train_epoch

N_FEATURES, WIDTH, K = 256, 4096, 32
LEARNING_RATE = 3e-3  # KSparseAutoencoder's default, for the bare step loops


def _repeats(quick: bool) -> int:
    return 3 if quick else 5


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _gaussian(n_rows: int, n_features: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_rows, n_features), dtype=np.float32)


def _load() -> str:
    """The machine's 1-minute load average, to judge timings on a shared host."""
    return f"{os.getloadavg()[0]:.1f}"


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


# ------------------------------------------------------------------ bounds


def training_flops(n_features: int, width: int, k: int) -> int:
    """Floating-point operations one training row of a top-k step needs."""
    return 2 * n_features * width + 10 * k * n_features


def encoder_flops(n_features: int, width: int) -> int:
    """Floating-point operations of one row's dense encoder forward."""
    return 2 * n_features * width


def matmul_rate(
    n_rows: int,
    n_features: int,
    width: int,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    fresh_output: bool = False,
    calls: int = 10,
) -> float:
    """FLOP/s of the encoder's product ``addmm(b, x, W.T)``, median over calls.

    The machine's rate writes into one preallocated output; with
    ``fresh_output`` every call allocates its own, as a training step does.
    """
    x = torch.randn(n_rows, n_features, device=device, dtype=dtype)
    W = torch.randn(width, n_features, device=device, dtype=dtype)
    b = torch.zeros(width, device=device, dtype=dtype)
    out = (
        None if fresh_output else torch.empty(n_rows, width, device=device, dtype=dtype)
    )

    def product() -> torch.Tensor:
        return torch.addmm(b, x, W.T, out=out)

    for _ in range(3):
        product()
    seconds = [_seconds(product, device) for _ in range(calls)]
    return 2 * n_rows * n_features * width / _median(seconds)


# ------------------------------------------------------------------ models


class _DenseReferenceAutoencoder(KSparseAutoencoder):
    """KSparseAutoencoder trained through the dense path: ``topk_relu`` codes
    of shape (batch, width), then ``codes @ W_dec``, as before the sparse
    kernels of ``skae._engine.topk``."""

    def _make_module(self, n_features, mean, generator) -> torch.nn.Module:
        weights = tied_init(mean, self.n_components, generator)
        return LinearAutoencoder(weights, TopK(self.k))


#: The estimator's ``precision`` and the product dtype it gives on the CPU.
_PRODUCTS = {"float32": None, "bfloat16": torch.bfloat16}

_PATHS = {
    "sparse (TopKAutoencoder)": (KSparseAutoencoder, TopKAutoencoder),
    "dense reference (topk_relu + dense decoder)": (
        _DenseReferenceAutoencoder,
        lambda weights, k: LinearAutoencoder(weights, TopK(k)),
    ),
}


def _module(
    path: str, n_features: int, width: int, k: int, device: torch.device
) -> torch.nn.Module:
    weights = tied_init(
        torch.zeros(n_features), width, torch.Generator().manual_seed(0)
    )
    return _PATHS[path][1](weights, k).to(device)


def _estimator(
    path: str, width: int, k: int, batch_size: int, epochs: int, **params
) -> KSparseAutoencoder:
    return _PATHS[path][0](
        n_components=width,
        k=k,
        aux_k=0,
        batch_size=batch_size,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=epochs,
        random_state=0,
        **params,
    )


def step_loop_rows_per_second(
    module: torch.nn.Module, X: torch.Tensor, batch_size: int, min_seconds: float
) -> float:
    """Rows/s of skae's ``train_epoch`` (forward, backward, atom projection,
    Adam) over batches already on the device, no data pipeline; steps run
    until ``min_seconds`` have passed, three at least."""
    optimizer = adam(module.parameters(), LEARNING_RATE)
    batches = X.split(batch_size)
    train_epoch(module, optimizer, batches[:1])  # warm-up: Adam's state, caches
    n_rows, seconds = 0, 0.0
    while seconds < min_seconds or n_rows < 3 * batch_size:
        batch = batches[(n_rows // batch_size) % len(batches)]
        seconds += _seconds(
            lambda batch=batch: float(train_epoch(module, optimizer, [batch])), X.device
        )
        n_rows += len(batch)
    return n_rows / seconds


def fit_rows_per_second(
    estimator: KSparseAutoencoder, X: np.ndarray, epochs: int
) -> tuple[float, float]:
    """Training rows/s of ``estimator.fit(X)``: over the whole call, and over
    the training loop inside it (data pipeline included; setup and the
    statistics measured after training left out)."""
    loop_seconds = []

    def timed_train(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            loop_seconds.append(time.perf_counter() - start)

    original = skae._base.train
    skae._base.train = timed_train
    try:
        start = time.perf_counter()
        estimator.fit(X)
        seconds = time.perf_counter() - start
    finally:
        skae._base.train = original
    rows = len(X) * epochs
    return rows / seconds, rows / sum(loop_seconds)


def _step_profile(
    n_features: int, width: int, k: int, batch_size: int, precision: str
) -> list[dict]:
    """Where the sparse step's CPU time goes: the top operators by self time."""
    from torch.profiler import ProfilerActivity, profile

    module = _module(next(iter(_PATHS)), n_features, width, k, torch.device("cpu"))
    optimizer = adam(module.parameters(), LEARNING_RATE)
    X = torch.from_numpy(_gaussian(6 * batch_size, n_features))
    batches = X.split(batch_size)
    with products_in(_PRODUCTS[precision]):
        train_epoch(module, optimizer, batches[:1])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_epoch(module, optimizer, batches[1:])
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {
            "precision": precision,
            "batch_size": batch_size,
            "op": e.key,
            "share_of_step": e.self_cpu_time_total / total,
            "ms_per_step": e.self_cpu_time_total / 1e3 / (len(batches) - 1),
        }
        for e in events[:6]
    ]


# ------------------------------------------------------------------ throughput


def _best(rows: list[dict]) -> tuple[float, str]:
    """The highest fraction of the bound among ``rows``, and where it was."""
    row = max(rows, key=lambda row: row["fraction_of_bound"])
    batch = f", batch {row['batch_size']}" if "batch_size" in row else ""
    fraction = row["fraction_of_bound"]
    return fraction, f"{fraction:.0%} ({row['threads']} thread(s){batch})"


def _verdict(what: str, target: float, user: list[dict], inner: list[dict]) -> str:
    """Whether the user-facing call meets ``target``, the inner loop beside it."""
    fraction, where = _best(user)
    return (
        f"Target, {what} at {target:.0%} of the bound or more: "
        f"{'met' if fraction >= target else 'missed'} as measured here; best "
        f"{where}, and {_best(inner)[1]} without the pipeline."
    )


def _training_verdict(speeds: list[dict]) -> str:
    """The training target, judged on fit's training loop, beside the whole
    ``fit`` call and the bare step loop, for each precision."""
    sparse = next(iter(_PATHS))

    def verdict(label: str, precision: str, timing: str, bound: str) -> str:
        key = "fraction_of_bound" if bound == "float32" else "fraction_of_bf16_bound"
        rows = [
            r
            for r in speeds
            if r["path"] == sparse
            and r["precision"] == precision
            and r["timing"] == timing
        ]
        row = max(rows, key=lambda r: r[key])
        return (
            f"{label}: {'met' if row[key] >= 0.5 else 'missed'}, best "
            f"{row[key]:.0%} of the {bound} bound ({row['threads']} thread(s), "
            f"batch {row['batch_size']})"
        )

    lines = [
        verdict("float32 training loop", "float32", "fit's training loop", "float32"),
        verdict("float32 whole `fit` call", "float32", "fit", "float32"),
        verdict(
            "bfloat16 training loop", "bfloat16", "fit's training loop", "bfloat16"
        ),
        verdict("bfloat16 whole `fit` call", "bfloat16", "fit", "bfloat16"),
        verdict("float32 bare step loop", "float32", "step loop", "float32"),
        verdict("bfloat16 bare step loop", "bfloat16", "step loop", "bfloat16"),
    ]
    return (
        "Targets, 50% of the bound of the products' own precision or more: "
        "`fit`'s training loop (every step of the fit and its data pipeline, "
        "without the setup before and any pass after) and the whole `fit` "
        "call; the bare step loop beside them.\n\n"
        + "\n".join(f"- {line}" for line in lines)
    )


def _bound_row(
    threads: int, batch_size: int, rates: dict[str, list[float]], flops: int
) -> dict:
    return {
        "threads": threads,
        "batch_size": batch_size,
        "matmul_gflops": _median(rates["float32"]) / 1e9,
        "fresh_output_gflops": _median(rates["fresh"]) / 1e9,
        "bf16_matmul_gflops": _median(rates["bfloat16"]) / 1e9,
        "flops_per_row": flops,
        "bound_rows_per_s": round(_median(rates["float32"]) / flops),
        "bf16_bound_rows_per_s": round(_median(rates["bfloat16"]) / flops),
    }


def _speed_row(
    path: str, precision: str, timing: str, bound: dict, values: list[float]
) -> dict:
    rows_per_s = _median(values)
    return {
        "path": path,
        "precision": precision,
        "timing": timing,
        "threads": bound["threads"],
        "batch_size": bound["batch_size"],
        "rows_per_s": round(rows_per_s),
        "fraction_of_bound": rows_per_s / bound["bound_rows_per_s"],
        "fraction_of_bf16_bound": rows_per_s / bound["bf16_bound_rows_per_s"],
    }


def _training_speeds(
    X: np.ndarray, batch_size: int, *, epochs: int, repeats: int, min_seconds: float
) -> tuple[dict, list[dict]]:
    """Bound and rows/s of both paths at one batch size, with the current
    threads; ``epochs=0`` leaves the fits out."""
    d, width, k = X.shape[1], WIDTH, K
    cpu = torch.device("cpu")
    sparse, dense = _PATHS
    # Only the sparse path is fitted: the dense reference is there to show
    # what the kernels gain per step, and fitting it would triple the run.
    timings = ["fit", "fit's training loop"] if epochs else []
    keys = [
        (sparse, precision, timing)
        for precision in _PRODUCTS
        for timing in [*timings, "step loop"]
    ]
    keys.append((dense, "float32", "step loop"))
    figures = {key: [] for key in keys}
    X_tensor = torch.from_numpy(X)
    rates = {"float32": [], "fresh": [], "bfloat16": []}
    # Interleaved, so that a change of load on a shared machine hits skae's
    # paths and the bound alike.
    for _ in range(repeats):
        rates["float32"].append(matmul_rate(batch_size, d, width, device=cpu))
        rates["fresh"].append(
            matmul_rate(batch_size, d, width, device=cpu, fresh_output=True)
        )
        rates["bfloat16"].append(
            matmul_rate(batch_size, d, width, device=cpu, dtype=torch.bfloat16)
        )
        for path, precision, timing in keys:
            if timing == "fit":
                estimator = _estimator(
                    path, width, k, batch_size, epochs, precision=precision
                )
                whole, loop = fit_rows_per_second(estimator, X, epochs)
                figures[path, precision, "fit"].append(whole)
                figures[path, precision, "fit's training loop"].append(loop)
            elif timing == "step loop":
                module = _module(path, d, width, k, cpu)
                with products_in(_PRODUCTS[precision]):
                    figures[path, precision, timing].append(
                        step_loop_rows_per_second(
                            module, X_tensor, batch_size, min_seconds
                        )
                    )
    threads = torch.get_num_threads()
    bound = _bound_row(threads, batch_size, rates, training_flops(d, width, k))
    speeds = [_speed_row(*key, bound, values) for key, values in figures.items()]
    return bound, speeds


def throughput(*, quick: bool) -> tuple[str, object]:
    """KSparseAutoencoder training rows/s and its fraction of the bound."""
    repeats = _repeats(quick)
    epochs = 3 if quick else 5
    fit_rows = {256: 8192, 4096: 32_768} if quick else {256: 32_768, 4096: 131_072}
    min_seconds = 0.5 if quick else 2.0
    d, width, k = N_FEATURES, WIDTH, K
    load_before = _load()
    bounds, speeds = [], []
    threads = thread_budget()
    # The process's first optimizer imports torch._dynamo (over a second):
    # a one-time cost, not a rate, so a small fit pays it before the clock.
    _estimator(next(iter(_PATHS)), 64, 4, 64, 1).fit(_gaussian(256, 16))
    with threadpool_limits(limits=1), limited_threads():
        profiled = [(b, "float32") for b in fit_rows] + [(4096, "bfloat16")]
        profile = [
            row
            for b, precision in profiled
            for row in _step_profile(d, width, k, b, precision)
        ]
    # Threads of one process wait for each other at every operator; on a
    # shared machine that can cost more than the second core brings, so the
    # 1-thread figures (threadpool_limits, which skae honours) come too.
    for limits in (None, 1) if threads > 1 else (None,):
        with threadpool_limits(limits=limits), limited_threads():
            for batch_size, n_rows in fit_rows.items():
                bound, rows = _training_speeds(
                    _gaussian(n_rows, d),
                    batch_size,
                    epochs=epochs,
                    repeats=repeats,
                    min_seconds=min_seconds,
                )
                bounds.append(bound)
                speeds.extend(rows)
    report = (
        f"d={d}, width={width}, k={k}, aux_k=0, Gaussian float32 rows in memory; "
        f"`fit` with max_iter={epochs}, tol=0 on "
        + ", ".join(f"{n} rows at batch {b}" for b, n in fit_rows.items())
        + f"; the step loop runs {min_seconds:g} s at least. Medians of {repeats} "
        f"runs; skae's thread budget here is {threads}; load average "
        f"{load_before} before, {_load()} after (2 cores; other processes may "
        "share them).\n\n"
        "Bound: float32 `torch.addmm` rate on the encoder's shape "
        "(batch x d times d x width, bias included) into a preallocated "
        "output, same threads, divided by the FLOPs of a "
        f"row: 2·d·width = {encoder_flops(d, width)} for the dense encoder "
        f"forward plus 10·k·d = {10 * k * d} for the five products over kept "
        "latents (decoder forward, decoder backward to W_dec and to the codes, "
        "encoder backward to W_enc and to the input). The dense reference does "
        "more work for the same rows, so it is held to the same bound. "
        "`fresh_output_gflops` is the same product allocating its output on "
        "every call, as a step does: the gap is the allocator's and the page "
        "faults' share, counted against skae. The bf16 rate is the same "
        "product on bfloat16 operands (float32 accumulation, bfloat16 output), "
        "and `bf16_bound_rows_per_s` the bound it gives; the rows trained with "
        "precision='bfloat16' are judged against both.\n\n"
        + markdown(bounds)
        + "\n\n`fit` counts everything in it (the data checks, the mean, "
        "and a pass after training with the kept weights where the last "
        "epoch's figures do not describe them: none here); the step loop is "
        "skae's `train_epoch` over batches already in memory (module + Adam, "
        "no data pipeline). "
        "The 1-thread rows run under `threadpool_limits(1)`, which skae "
        "honours: on a loaded machine, threads that wait for each other at "
        "every operator can cost more than a second core brings.\n\n"
        + markdown(speeds)
        + "\n\n"
        + _training_verdict(speeds)
        + "\n\nWhere the sparse step's time goes (torch.profiler, 1 thread, "
        "self CPU time of aten ops, 5 steps):\n\n" + markdown(profile) + "\n"
    )
    data = {
        "n_features": d,
        "width": width,
        "k": k,
        "fit_rows": fit_rows,
        "epochs": epochs,
        "repeats": repeats,
        "threads": threads,
        "bounds": bounds,
        "speeds": speeds,
        "profile": profile,
    }
    return report, data


# ------------------------------------------------------------------ transform


def _transform_rows_per_second(transform: Callable, X: np.ndarray) -> float:
    start = time.perf_counter()
    transform(X)
    return len(X) / (time.perf_counter() - start)


def _encode_rows_per_second(
    module: torch.nn.Module, X: torch.Tensor, batch_size: int
) -> float:
    """Rows/s of the module's dense encode alone, batches already in memory."""
    module.eval()
    batches = list(X.split(batch_size))
    with torch.inference_mode():
        module.encode(batches[0])
        start = time.perf_counter()
        for batch in batches:
            module.encode(batch)
    return len(X) / (time.perf_counter() - start)


def _transform_methods(width: int, k: int) -> dict[str, str]:
    return {
        "sae": f"KSparseAutoencoder({width}, k={k}).transform",
        "sae csr": "the same, sparse_output=True (CSR codes)",
        "encode": "its module.encode alone (no numpy I/O)",
        "sae bf16": "the same, precision='bfloat16'",
        "sae csr bf16": "the same, sparse_output=True, precision='bfloat16'",
        "encode bf16": "its module.encode alone, bfloat16 products",
    }


def _transform_rows(
    sae: KSparseAutoencoder, baselines: dict, X: np.ndarray, n_omp: int, repeats: int
) -> list[dict]:
    """Rows/s of every method and the SAE's bound, with the current threads."""
    d, width = X.shape[1], sae.n_components
    batch_size = sae._inference_batch_rows()
    cpu = torch.device("cpu")
    ours = ("sae", "sae csr", "encode", "sae bf16", "sae csr bf16", "encode bf16")
    names = (*ours, *baselines)
    figures = {name: [] for name in (*names, "rate", "bf16 rate")}
    X_tensor = torch.from_numpy(X)
    # The same fitted model, its codes as CSR and its products in bfloat16.
    variants = {
        "sae": sae,
        "sae csr": copy.copy(sae).set_params(sparse_output=True),
        "sae bf16": copy.copy(sae).set_params(precision="bfloat16"),
        "sae csr bf16": copy.copy(sae).set_params(
            sparse_output=True, precision="bfloat16"
        ),
    }
    for repeat in range(repeats + 1):
        if repeat == 1:  # the first round warms up and is left out
            figures = {name: [] for name in figures}
        figures["rate"].append(matmul_rate(batch_size, d, width, device=cpu))
        figures["bf16 rate"].append(
            matmul_rate(batch_size, d, width, device=cpu, dtype=torch.bfloat16)
        )
        for name, estimator in variants.items():
            figures[name].append(_transform_rows_per_second(estimator.transform, X))
        for precision, name in (("float32", "encode"), ("bfloat16", "encode bf16")):
            with products_in(_PRODUCTS[precision]):
                figures[name].append(
                    _encode_rows_per_second(sae.module_, X_tensor, batch_size)
                )
        for name, model in baselines.items():
            rows = X[:n_omp] if name.startswith("OMP") else X
            figures[name].append(_transform_rows_per_second(model.transform, rows))
    bound = _median(figures["rate"]) / encoder_flops(d, width)
    bf16_bound = _median(figures["bf16 rate"]) / encoder_flops(d, width)
    threads = torch.get_num_threads()
    methods = _transform_methods(width, sae.k)
    return [
        {
            "method": methods.get(name, name),
            "threads": threads,
            "rows": n_omp if name.startswith("OMP") else len(X),
            "rows_per_s": round(_median(figures[name])),
            "vs_sae": _median(figures[name]) / _median(figures["sae"]),
            "bound_rows_per_s": round(bound) if name in ours else "",
            "fraction_of_bound": _median(figures[name]) / bound if name in ours else "",
            "fraction_of_bf16_bound": (
                _median(figures[name]) / bf16_bound if name in ours else ""
            ),
        }
        for name in names
    ]


def _output_buffer_rows(
    n_rows: int, width: int, k: int, batch_size: int, repeats: int
) -> list[dict]:
    """Rows/s of writing top-k codes, batch by batch, into a dense (n_rows,
    width) float32 output, by how the output is allocated: the cost of
    transform's output, the selection left out."""
    generator = torch.Generator().manual_seed(0)
    values = torch.rand(batch_size, k, generator=generator)
    indices = torch.rand(batch_size, width, generator=generator).argsort(dim=1)[:, :k]
    kept = [
        (values[: stop - start], indices[: stop - start], start, stop)
        for start in range(0, n_rows, batch_size)
        for stop in [min(start + batch_size, n_rows)]
    ]

    def fill(out: torch.Tensor) -> None:
        for v, i, start, stop in kept:
            out[start:stop].scatter_add_(1, i, v)

    def batch_matrices() -> np.ndarray:  # a (batch, width) matrix per batch
        out = np.empty((n_rows, width), np.float32)
        for v, i, start, stop in kept:
            codes = v.new_zeros(stop - start, width).scatter_add_(1, i, v)
            out[start:stop] = codes.numpy()
        return out

    def empty_then_zero() -> np.ndarray:
        out = np.empty((n_rows, width), np.float32)
        torch.from_numpy(out).zero_()
        fill(torch.from_numpy(out))
        return out

    def numpy_zeros() -> np.ndarray:
        out = np.zeros((n_rows, width), np.float32)
        fill(torch.from_numpy(out))
        return out

    def numpy_zeros_mapped() -> np.ndarray:
        out = np.zeros((n_rows, width), np.float32)
        skae._base._map_pages(out)
        fill(torch.from_numpy(out))
        return out

    def torch_zeros() -> np.ndarray:
        out = torch.zeros(n_rows, width)
        fill(out)
        return out.numpy()

    reused = torch.zeros(n_rows, width)

    def prefaulted() -> np.ndarray:  # one buffer, its pages mapped: a floor
        reused.zero_()
        fill(reused)
        return reused.numpy()

    ways = {
        "a (batch, width) matrix per batch, copied (before)": batch_matrices,
        "np.empty, zeroed, filled in place": empty_then_zero,
        "np.zeros, filled in place": numpy_zeros,
        "np.zeros, its pages mapped first, filled in place (skae)": (
            numpy_zeros_mapped
        ),
        "torch.zeros, filled in place": torch_zeros,
        "one pre-faulted buffer, zeroed and filled (reuse; a floor)": prefaulted,
    }
    rows = []
    for name, way in ways.items():
        first = _seconds(way, torch.device("cpu"))
        again = [_seconds(way, torch.device("cpu")) for _ in range(repeats)]
        rows.append(
            {
                "output": name,
                "first_call_rows_per_s": round(n_rows / first),
                "repeated_rows_per_s": round(n_rows / _median(again)),
            }
        )
    return rows


def transform_speed(*, quick: bool) -> tuple[str, object]:
    """Transform rows/s: KSparseAutoencoder vs PCA and OMP at the same L0."""
    repeats = _repeats(quick)
    d, width, k = N_FEATURES, WIDTH, K
    n_rows, n_omp = (16_384, 128) if quick else (65_536, 256)
    X_fit = _gaussian(8192, d, seed=1)
    X = _gaussian(n_rows, d, seed=2)
    # Transform speed does not depend on how well the model is trained.
    sae = _estimator("sparse (TopKAutoencoder)", width, k, 256, 1).fit(X_fit)
    baselines = {
        f"PCA(n_components={k}).transform": PCA(n_components=k).fit(X_fit),
        # MiniBatchDictionaryLearning.transform is sklearn's sparse_encode
        # with OMP; SparseCoder runs the same code on given atoms, here the
        # SAE's, sparing a 4096-atom dictionary fit that takes many minutes.
        f"OMP, {k} of {width} atoms (MiniBatchDL's transform)": SparseCoder(
            dictionary=sae.components_,
            transform_algorithm="omp",
            transform_n_nonzero_coefs=k,
        ),
    }
    threads = thread_budget()
    load_before = _load()
    rows = []
    for limits in (None, 1) if threads > 1 else (None,):
        with threadpool_limits(limits=limits), limited_threads():
            rows.extend(_transform_rows(sae, baselines, X, n_omp, repeats))
    batch_size = sae._inference_batch_rows()
    methods = _transform_methods(width, k)
    buffers = _output_buffer_rows(n_rows, width, k, batch_size, repeats)
    report = (
        f"d={d}, float32 input, medians of {repeats} runs after one that warms "
        f"up, at skae's thread "
        f"budget ({threads}) and at 1 thread (`threadpool_limits(1)`); load "
        f"average {load_before} before, {_load()} after. PCA keeps k={k} "
        f"components, the same L0 as the SAE's codes (it cannot have {width}). "
        "OMP runs on the SAE's own atoms with sklearn's sparse_encode (the code "
        f"behind MiniBatchDictionaryLearning.transform) on {n_omp} rows only: "
        "it is slow, and computes the atoms' Gram matrix on every call.\n\n"
        "SAE bound: float32 `torch.addmm` rate on transform's batch shape "
        f"({batch_size} x {d} times {d} x {width}, preallocated output) over "
        f"2·d·width = {encoder_flops(d, width)} FLOPs per row; top-k selection "
        "and writing the dense (n, width) codes, 16 KiB a row, count as free "
        "(`sparse_output=True` writes only the k kept codes). "
        "The bf16 bound is the same product on bfloat16 operands.\n\n"
        + markdown(rows)
        + "\n\n"
        + "\n\n".join(
            f"- {label}: "
            + _verdict(
                "transform",
                0.7,
                [row for row in rows if row["method"] == methods[user]],
                [row for row in rows if row["method"] == methods[inner]],
            )
            for label, user, inner in (
                ("Dense codes, precision='float32'", "sae", "encode"),
                ("CSR codes, precision='float32'", "sae csr", "encode"),
                ("Dense codes, precision='bfloat16'", "sae bf16", "encode bf16"),
                ("CSR codes, precision='bfloat16'", "sae csr bf16", "encode bf16"),
            )
        )
        + f"\n\nThe dense output, {n_rows} x {width} float32 codes written batch "
        f"by batch ({batch_size} rows, {k} codes a row), by how it is allocated; "
        "the first call is the process's first of that size, the repeated ones "
        f"the median of {repeats}:\n\n" + markdown(buffers) + "\n"
    )
    data = {
        "n_features": d,
        "width": width,
        "k": k,
        "batch_size": batch_size,
        "repeats": repeats,
        "threads": threads,
        "rows": rows,
        "output_buffers": buffers,
    }
    return report, data


# ------------------------------------------------------------------ kernels


def _timed_ways(ways: dict[str, Callable[[], object]], repeats: int) -> dict:
    """Median seconds of each of ``ways`` (label: callable), interleaved; the
    first round of calls warms up and is left out."""
    seconds = {label: [] for label in ways}
    for _ in range(repeats + 1):
        for label, way in ways.items():
            seconds[label].append(_seconds(way, torch.device("cpu")))
    return {label: _median(times[1:]) for label, times in seconds.items()}


def _with_setting(name: str, value, run: Callable[[], object]) -> Callable[[], object]:
    """``run`` with ``skae._engine.topk.<name>`` set to ``value`` meanwhile."""

    def with_setting() -> object:
        default = getattr(topk_module, name)
        setattr(topk_module, name, value)
        try:
            return run()
        finally:
            setattr(topk_module, name, default)

    return with_setting


def _timed_settings(
    name: str, settings: dict, run: Callable[[], object], repeats: int
) -> dict:
    """Median seconds of ``run`` with ``skae._engine.topk.<name>`` set to each
    of ``settings`` (label: value) in turn, interleaved."""
    ways = {label: _with_setting(name, value, run) for label, value in settings.items()}
    return _timed_ways(ways, repeats)


def _chunk_rows(
    d: int, width: int, batch_size: int, chunk_elements: list[int], repeats: int
) -> list[dict]:
    """Rows/s of the CPU's chunked encoder (product and selection) by how many
    pre-activations a chunk holds, interleaved, with the current threads."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, d, generator=generator)
    W = torch.randn(width, d, generator=generator) / d**0.5
    b = torch.zeros(width)
    default = topk_module.CHUNK_ELEMENTS
    seconds = _timed_settings(
        "CHUNK_ELEMENTS",
        {size: size for size in chunk_elements},
        lambda: topk_module._encode_chunks(x, W, b, K),
        repeats,
    )
    return [
        {
            "threads": torch.get_num_threads(),
            "width": width,
            "batch_size": batch_size,
            "chunk_elements": f"2^{size.bit_length() - 1}"
            + (" (skae)" if size == default else ""),
            "chunk_rows": min(batch_size, max(1, size // width)),
            "rows_per_s": round(batch_size / median),
            "vs_skae": seconds[default] / median,
        }
        for size, median in seconds.items()
    ]


def _selection_rows(
    width: int, dtype: torch.dtype, groups: list[int], repeats: int
) -> list[dict]:
    """Rows/s of the CPU's selection (``K`` of ``width``): ``torch.topk``,
    torch's grouped selection, and the compiled kernel by the columns per
    strided group, interleaved, with the current threads."""
    rows = CHUNK_ROWS_FOR_SELECTION
    generator = torch.Generator().manual_seed(0)
    pre = torch.randn(rows, width, generator=generator).to(dtype)
    skae_group = topk_module._compiled_group_size(width, K)
    compiled = f"compiled, groups of {skae_group} (skae)"
    ways = {
        "torch.topk": lambda: torch.topk(pre, K, dim=1, sorted=False),
        "torch, grouped by 8": lambda: topk_module._grouped_largest_k(pre, K),
    }
    for group in groups:
        label = compiled if group == skae_group else f"compiled, groups of {group}"
        ways[label] = _with_setting(
            "_compiled_group_size",
            lambda width, k, group=group: group,
            lambda: topk_module.largest_k(pre, K),
        )
    seconds = _timed_ways(ways, repeats)
    return [
        {
            "threads": torch.get_num_threads(),
            "dtype": str(dtype).removeprefix("torch."),
            "width": width,
            "selection": label,
            "rows_per_s": round(rows / median),
            "vs_skae": seconds[compiled] / median,
        }
        for label, median in seconds.items()
    ]


#: Rows of pre-activations each timing of :func:`_selection_rows` selects from.
CHUNK_ROWS_FOR_SELECTION = 1024


def _decoder_grad_rows(d: int, width: int, batch_size: int, repeats: int) -> list[dict]:
    """Milliseconds of the sparse decoder's forward and its weights' backward:
    embedding_bag's own backward against skae's sparse product."""
    generator = torch.Generator().manual_seed(0)
    W_dec = torch.randn(width, d, generator=generator).requires_grad_()
    values = torch.rand(batch_size, K, generator=generator)
    indices = torch.rand(batch_size, width, generator=generator).argsort(dim=1)[:, :K]
    grad = torch.randn(batch_size, d, generator=generator)
    bias = torch.zeros(d)

    def embedding_bag() -> None:
        W_dec.grad = None
        F.embedding_bag(indices, W_dec, mode="sum", per_sample_weights=values).backward(
            grad
        )

    def sparse_product() -> None:
        W_dec.grad = None
        topk_module.sparse_decode(values, indices, W_dec, bias).backward(grad)

    ways = {
        "embedding_bag's backward": embedding_bag,
        "sparse product (skae)": sparse_product,
    }
    seconds = {name: [] for name in ways}
    for _ in range(repeats + 1):
        for name, way in ways.items():
            seconds[name].append(_seconds(way, torch.device("cpu")))
    baseline = _median(seconds["sparse product (skae)"][1:])
    return [
        {
            "threads": torch.get_num_threads(),
            "batch_size": batch_size,
            "W_dec gradient": name,
            "ms": 1e3 * _median(times[1:]),
            "vs_skae": _median(times[1:]) / baseline,
        }
        for name, times in seconds.items()
    ]


def kernels(*, quick: bool) -> tuple[str, object]:
    """The CPU choices of ``skae._engine.topk``, measured side by side: the
    rows of a chunk of the encoder's product, the selection, and how the
    decoder's weights get their gradient."""
    repeats = 5 if quick else 15
    d = N_FEATURES
    widths = (4096, 16_384) if quick else (4096, 16_384, 32_768)
    sizes = [2**20, 2**21, 2**22, 2**23]
    threads = thread_budget()
    load_before = _load()
    chunks, selections, grads = [], [], []
    for limits in (None, 1) if threads > 1 else (None,):
        with threadpool_limits(limits=limits), limited_threads():
            for width in widths:
                for batch_size in (1024, 4096):
                    chunks.extend(_chunk_rows(d, width, batch_size, sizes, repeats))
                for dtype in (torch.float32, torch.bfloat16):
                    selections.extend(
                        _selection_rows(width, dtype, [4, 8, 16, 32, 64], repeats)
                    )
            grads.extend(_decoder_grad_rows(d, WIDTH, 4096, repeats))
    report = (
        f"d={d}, k={K}, Gaussian float32 rows; medians of {repeats} interleaved "
        f"runs at skae's thread budget ({threads}) and at 1 thread; load average "
        f"{load_before} before, {_load()} after.\n\n"
        "The CPU's top-k encoder (`_encode_chunks`: the product, then the "
        "selection) writes each chunk of rows' pre-activations into one buffer "
        "of `CHUNK_ELEMENTS`; a batch no larger than a chunk is one product. "
        "`vs_skae` is the speed against skae's setting (above 1: faster).\n\n"
        + markdown(chunks)
        + f"\n\nThe selection alone ({K} of `width` on "
        f"{CHUNK_ROWS_FOR_SELECTION} rows of Gaussian pre-activations): one "
        "`torch.topk` over each row, torch's grouped selection (the fallback "
        "without numba) and the compiled kernel of `largest_k` by the columns "
        "in each of its strided groups; `vs_skae` as above.\n\n"
        + markdown(selections)
        + f"\n\nThe decoder's forward and the backward to its weights "
        f"(width {WIDTH}), through `embedding_bag`'s own backward or through "
        "`sparse_decode`'s sparse product; `vs_skae` is the time against "
        "skae's (above 1: slower).\n\n" + markdown(grads) + "\n"
    )
    return report, {
        "chunks": chunks,
        "selection": selections,
        "decoder_gradient": grads,
    }


# ------------------------------------------------------------------ memory

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the parent.
_PEAK_RSS = "int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024"

_RSS_CHILD = f"""
import sys, numpy as np
from skae import KSparseAutoencoder
path, mode, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
# np.load reads the file straight into RAM; np.array of a memmap would also
# count the mapped pages it copies from.
X = np.load(path, mmap_mode="r" if mode == "memmap" else None)
KSparseAutoencoder(
    n_components=256, k=16, max_iter=1, batch_size=batch_size, random_state=0
).fit(X)
print({_PEAK_RSS})
"""


def _python_peak_rss(*args: str, threads: int | None = None) -> int:
    """VmHWM in bytes of a fresh ``python -c *args`` that prints it last."""
    env = dict(os.environ)
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    out = subprocess.run(
        [sys.executable, "-c", *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return int(out.stdout.split()[-1])


def _write_memmap(path: Path, n_rows: int, n_features: int) -> int:
    """A float32 .npy of Gaussian rows, written in slices; returns its bytes."""
    X = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(n_rows, n_features)
    )
    rng = np.random.default_rng(0)
    for start in range(0, n_rows, 100_000):
        stop = min(start + 100_000, n_rows)
        X[start:stop] = rng.standard_normal((stop - start, n_features), np.float32)
    X.flush()
    nbytes = X.nbytes
    del X
    return nbytes


def peak_rss_rows(
    n_rows: int,
    n_features: int = 64,
    batch_size: int = 256,
    *,
    repeats: int = 1,
    threads: int | None = None,
) -> list[dict]:
    """Peak RSS of one epoch of KSparseAutoencoder(256, k=16) over a memmap
    and over the same rows in RAM, each in a fresh process (medians);
    ``threads`` sets the processes' thread pools, None leaves them be."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "X.npy"
        nbytes = _write_memmap(path, n_rows, n_features)
        imports = f"import torch, sklearn, skae; print({_PEAK_RSS})"
        base = _python_peak_rss(imports, threads=threads)
        for mode in ("memmap", "in-RAM"):
            peaks, seconds = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                args = (_RSS_CHILD, str(path), mode, str(batch_size))
                peaks.append(_python_peak_rss(*args, threads=threads))
                seconds.append(time.perf_counter() - start)
            peak = _median(peaks)
            rows.append(
                {
                    "input": mode,
                    "data_mib": nbytes / 2**20,
                    "peak_rss_mib": peak / 2**20,
                    "over_imports_mib": (peak - base) / 2**20,
                    "seconds": _median(seconds),
                }
            )
    return rows


def memory(*, quick: bool) -> tuple[str, object]:
    """Peak RSS of a streamed memmap fit vs an in-RAM fit of the same rows."""
    n_rows, n_features, batch_size = (1_000_000 if quick else 6_000_000), 64, 4096
    # A high-water mark, not a timing: it varies by a few MiB from run to run,
    # and each run of the full mode streams 1.5 GB.
    repeats = 1 if quick else 2
    rows = peak_rss_rows(n_rows, n_features, batch_size, repeats=repeats, threads=1)
    peak = rows[0]["peak_rss_mib"] * 2**20
    if n_rows * n_features * 4 >= 1.5e9:
        verdict = (
            "Target, a 1.5 GB memmap streamed with peak RSS under 1 GB "
            f"({1e9 / 2**20:.0f} MiB): {'met' if peak < 1e9 else 'missed'}."
        )
    else:
        verdict = "The target's 1.5 GB file is the full mode's (`--full`)."
    report = (
        f"{n_rows} x {n_features} float32 .npy ({n_rows * n_features * 4 / 1e9:.2f}"
        f" GB), KSparseAutoencoder(256, k=16), one epoch at batch {batch_size}, "
        "each fit in a fresh process with 1 thread (so that its time does not "
        "hang on the machine's load; the memory does not depend on it). Peak "
        "RSS is VmHWM; its growth is over a process that only imports torch, "
        f"sklearn and skae. Median of {repeats} run(s) per input.\n\n"
        + markdown(rows)
        + f"\n\n{verdict}\n"
    )
    data = {
        "n_rows": n_rows,
        "n_features": n_features,
        "batch_size": batch_size,
        "repeats": repeats,
        "rows": rows,
    }
    return report, data


# ------------------------------------------------------------------ gpu


def _gpu_rows(
    device: torch.device, n_features: int, width: int, k: int, n_rows: int, repeats: int
) -> list[dict]:
    """Training rows/s, fraction of the bf16 bound and peak memory at one d,
    with float32 and with bfloat16 products."""
    batch_size = 4096
    X = _gaussian(n_rows, n_features)
    rates = {
        dtype: _median(
            [
                matmul_rate(batch_size, n_features, width, device=device, dtype=dtype)
                for _ in range(repeats)
            ]
        )
        for dtype in (torch.bfloat16, torch.float32)
    }
    bound = rates[torch.bfloat16] / training_flops(n_features, width, k)
    rows = []
    for precision in _PRODUCTS:
        fits, loops, peaks = [], [], []
        for _ in range(repeats):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            estimator = _estimator(
                "sparse (TopKAutoencoder)",
                width,
                k,
                batch_size,
                1,
                device=str(device),
                precision=precision,
            )
            fits.append(fit_rows_per_second(estimator, X, 1)[1])
            peaks.append(torch.cuda.max_memory_allocated(device))
            del estimator
            module = _module("sparse (TopKAutoencoder)", n_features, width, k, device)
            X_device = torch.from_numpy(X).to(device)
            with products_in(_PRODUCTS[precision]):
                loops.append(
                    step_loop_rows_per_second(module, X_device, batch_size, 2.0)
                )
            del module, X_device
        rows.append(
            {
                "d": n_features,
                "width": width,
                "k": k,
                "precision": precision,
                "batch_size": batch_size,
                "bf16_tflops": rates[torch.bfloat16] / 1e12,
                "fp32_tflops": rates[torch.float32] / 1e12,
                "bound_rows_per_s": round(bound),
                "fit_loop_rows_per_s": round(_median(fits)),
                "fit_loop_fraction": _median(fits) / bound,
                "step_loop_rows_per_s": round(_median(loops)),
                "step_loop_fraction": _median(loops) / bound,
                "peak_gpu_mib": _median(peaks) / 2**20,
            }
        )
    return rows


def gpu(*, quick: bool) -> tuple[str, object]:
    """KSparseAutoencoder on CUDA at d=768 and d=4096, width 32768, k=32."""
    if not torch.cuda.is_available():
        return "skipped: no CUDA device", {"skipped": True}
    repeats = _repeats(quick)
    n_rows = 65_536 if quick else 262_144
    device = torch.device("cuda")
    rows = [
        row
        for d in (768, 4096)
        for row in _gpu_rows(device, d, 32_768, K, n_rows, repeats)
    ]
    report = (
        f"{torch.cuda.get_device_name(device)}; {n_rows} Gaussian float32 rows "
        "per fit (one epoch, aux_k=0, tol=0; rows/s over its training loop), "
        f"medians of {repeats} runs, batch 4096, with precision='float32' and "
        "'bfloat16' (the GPU default, 'auto'). Weights and optimizer stay in "
        "float32. The bound is "
        "the measured bf16 `torch.addmm` rate on the encoder's shape "
        "(preallocated output) over 2·d·width + 10·k·d FLOPs per row; the "
        "float32 rate is there for scale. Peak GPU memory is "
        "torch.cuda.max_memory_allocated during `fit`.\n\n" + markdown(rows) + "\n"
    )
    return report, {"device": torch.cuda.get_device_name(device), "rows": rows}
