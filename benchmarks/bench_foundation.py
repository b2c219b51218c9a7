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
import time

import numpy as np
from _common import markdown, write_results
from suite_speed import peak_rss_rows


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


def memory_table(n_rows: int) -> list[dict]:
    """Peak RSS of one epoch over a memmap of n_rows x 64 vs the same in RAM."""
    return peak_rss_rows(n_rows)


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
