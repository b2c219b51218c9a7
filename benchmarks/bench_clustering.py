"""Sparse autoencoder features for clustering, against PCA and raw features.

Each method is fit on the whole dataset; its codes feed KMeans with as many
clusters as there are classes, and the clusters are scored against the
classes (adjusted Rand index, normalized mutual information). Figures are
medians over ``--repeats`` seeds, all methods measured in one run.

Run ``python benchmarks/bench_clustering.py [--repeats 3]``; it prints a
markdown table and writes it, with the raw figures as JSON, under
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _common import write_results
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, load_wine
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from skae import (
    KLSparseAutoencoder,
    KSparseAutoencoder,
    L1SparseAutoencoder,
    StackedSparseAutoencoder,
)


def datasets():
    digits = load_digits()
    wine = load_wine()
    return {
        "digits (1797 x 64)": (digits.data / 16.0, digits.target),
        "wine (178 x 13, standardized)": (
            StandardScaler().fit_transform(wine.data),
            wine.target,
        ),
    }


def methods(n_features: int, seed: int) -> dict:
    """Models sized for the data: about n_features / 4 dense or active codes."""
    small = max(2, n_features // 4)
    wide = 2 * n_features
    return {
        "raw features": FunctionTransformer(),
        f"PCA({small})": PCA(n_components=small, random_state=seed),
        f"KSparse({wide}, k={small})": KSparseAutoencoder(
            n_components=wide, k=small, random_state=seed
        ),
        f"L1({wide}, alpha=0.1)": L1SparseAutoencoder(
            n_components=wide, alpha=0.1, random_state=seed
        ),
        f"KL({n_features})": KLSparseAutoencoder(
            n_components=n_features, random_state=seed
        ),
        f"Stacked KL({n_features}, {small})": StackedSparseAutoencoder(
            hidden_layer_sizes=(n_features, small), random_state=seed
        ),
    }


def run(repeats: int) -> list[dict]:
    rows = []
    for data_name, (X, y) in datasets().items():
        n_clusters = len(np.unique(y))
        figures: dict[str, dict[str, list[float]]] = {}
        for seed in range(repeats):
            for name, model in methods(X.shape[1], seed).items():
                start = time.perf_counter()
                codes = model.fit_transform(X)
                seconds = time.perf_counter() - start
                labels = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(
                    codes
                )
                entry = figures.setdefault(name, {"ari": [], "nmi": [], "fit_s": []})
                entry["ari"].append(adjusted_rand_score(y, labels))
                entry["nmi"].append(normalized_mutual_info_score(y, labels))
                entry["fit_s"].append(seconds)
        for name, entry in figures.items():
            rows.append(
                {
                    "dataset": data_name,
                    "method": name,
                    **{key: statistics.median(values) for key, values in entry.items()},
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| dataset | method | ARI | NMI | fit s |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['ari']:.3f} | {r['nmi']:.3f} "
            f"| {r['fit_s']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = run(args.repeats)
    report = (
        f"## KMeans on features, medians of {args.repeats} seeds\n\n"
        + markdown(rows)
        + "\n"
    )
    write_results("clustering", report, rows)


if __name__ == "__main__":
    main()
