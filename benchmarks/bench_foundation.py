"""Foundation benchmark: KSparseAutoencoder with its defaults vs PCA and
MiniBatchDictionaryLearning on a 1e4 x 100 table, and the peak memory of a
streamed memmap fit vs an in-RAM fit.

Run ``python benchmarks/bench_foundation.py [--repeats 3] [--rows 1000000]``;
it prints two markdown tables and writes them, with the raw figures as JSON,
under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import markdown, write_results


def sparse_table(n_samples=10_000, n_features=100, n_atoms=256, k=8, seed=0):
    """Standardized rows that are sums of k of n_atoms random atoms plus noise."""
    from sklearn.preprocessing import StandardScaler

    rng = np.random.RandomState(seed)
    atoms = rng.randn(n_atoms, n_features)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n_samples, n_atoms))
    cols = np.argsort(rng.rand(n_samples, n_atoms), axis=1)[:, :k]
    codes[np.arange(n_samples)[:, None], cols] = rng.uniform(0.5, 2.5, (n_samples, k))
    X = codes @ atoms + 0.05 * rng.randn(n_samples, n_features)
    return StandardScaler().fit_transform(X)


def explained_variance(X, reconstruction):
    return 1 - ((X - reconstruction) ** 2).sum() / ((X - X.mean(0)) ** 2).sum()


def quality_table(repeats: int) -> list[dict]:
    from sklearn.decomposition import PCA, MiniBatchDictionaryLearning

    from skae import KSparseAutoencoder

    X = sparse_table()
    makers = {
        "PCA(16)": lambda seed: PCA(n_components=16, random_state=seed),
        "MiniBatchDictionaryLearning(128)+OMP(16)": lambda seed: (
            MiniBatchDictionaryLearning(
                n_components=128,
                transform_algorithm="omp",
                transform_n_nonzero_coefs=16,
                random_state=seed,
            )
        ),
        "KSparseAutoencoder() defaults: 128, k=16": lambda seed: KSparseAutoencoder(
            random_state=seed
        ),
    }
    rows = []
    for name, make in makers.items():
        fits, transforms, scores, l0s = [], [], [], []
        for seed in range(repeats):
            model = make(seed)
            start = time.perf_counter()
            model.fit(X)
            fits.append(time.perf_counter() - start)
            start = time.perf_counter()
            codes = model.transform(X)
            transforms.append(time.perf_counter() - start)
            recon = (
                codes @ model.components_
                if name.startswith("MiniBatch")
                else model.inverse_transform(codes)
            )
            scores.append(explained_variance(X, recon))
            l0s.append(float((codes != 0).sum(1).mean()))
        rows.append(
            {
                "method": name,
                "explained_variance": statistics.median(scores),
                "mean_l0": statistics.median(l0s),
                "fit_seconds": statistics.median(fits),
                "transform_seconds": statistics.median(transforms),
            }
        )
    return rows


# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the parent.
_PEAK_RSS = "int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024"

_RSS_CHILD = f"""
import sys, numpy as np
from skae import KSparseAutoencoder
path, mode = sys.argv[1], sys.argv[2]
X = np.load(path, mmap_mode="r")
if mode == "in-RAM":
    X = np.array(X)
KSparseAutoencoder(n_components=256, k=16, max_iter=1, random_state=0).fit(X)
print({_PEAK_RSS})
"""


def memory_table(n_rows: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "X.npy"
        X = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.float32, shape=(n_rows, 64)
        )
        rng = np.random.RandomState(0)
        for start in range(0, n_rows, 100_000):
            stop = min(start + 100_000, n_rows)
            X[start:stop] = rng.randn(stop - start, 64)
        X.flush()
        nbytes = X.nbytes
        del X
        baseline = subprocess.run(
            [sys.executable, "-c", f"import torch, sklearn, skae; print({_PEAK_RSS})"],
            capture_output=True,
            text=True,
            check=True,
        )
        base = int(baseline.stdout.split()[-1])
        for mode in ("memmap", "in-RAM"):
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", _RSS_CHILD, str(path), mode],
                capture_output=True,
                text=True,
                check=True,
            )
            peak = int(out.stdout.split()[-1])
            rows.append(
                {
                    "input": mode,
                    "data_mib": nbytes / 2**20,
                    "peak_rss_mib": peak / 2**20,
                    "over_imports_mib": (peak - base) / 2**20,
                    "seconds": time.perf_counter() - start,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="memmap rows (x64 float32)"
    )
    args = parser.parse_args()
    quality = quality_table(args.repeats)
    memory = memory_table(args.rows)
    report = (
        f"## 1e4 x 100 sparse table, medians of {args.repeats} runs\n\n"
        + markdown(quality)
        + f"\n\n## Peak RSS of one epoch, {args.rows} x 64 float32\n\n"
        + markdown(memory)
        + "\n"
    )
    write_results("foundation", report, {"quality": quality, "memory": memory})


if __name__ == "__main__":
    main()
