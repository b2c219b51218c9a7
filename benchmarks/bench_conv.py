"""Convolutional sparse features: ConvSparseAutoencoder vs raw pixels and PCA.

On digits (8 x 8) the benchmark reports each method's explained variance,
the 5-fold accuracy of a LogisticRegression on its features (the whole
pipeline cross-validated, so features are learnt without the test fold) and
the fit time. On 8 x 8 natural-image patches it reports explained variance
and fit time. Figures are medians over ``--repeats`` seeds, all measured in
one run.

Run ``python benchmarks/bench_conv.py [--repeats 3]``; it prints markdown
tables and writes them, with JSON, under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _common import markdown, write_results
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skae import ConvSparseAutoencoder
from skae.datasets import make_image_patches


def explained_variance(model, X) -> float:
    if isinstance(model, FunctionTransformer):
        return 1.0
    if isinstance(model, ConvSparseAutoencoder):
        return model.score(X)
    reconstruction = model.inverse_transform(model.transform(X))
    return float(1 - ((X - reconstruction) ** 2).sum() / ((X - X.mean(0)) ** 2).sum())


def methods(seed: int) -> dict:
    return {
        "raw pixels": lambda: FunctionTransformer(),
        "PCA(32)": lambda: PCA(n_components=32, random_state=seed),
        "Conv WTA(32, k=1, 5% lifetime)": lambda: ConvSparseAutoencoder(
            (8, 8), random_state=seed
        ),
        "Conv WTA(32, k=1, no lifetime)": lambda: ConvSparseAutoencoder(
            (8, 8), lifetime_sparsity=1.0, random_state=seed
        ),
        "Conv L1(32)": lambda: ConvSparseAutoencoder(
            (8, 8), sparsity="l1", random_state=seed
        ),
    }


def run(repeats: int) -> tuple[list[dict], list[dict]]:
    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    patches = make_image_patches(10_000, random_state=0)
    figures: dict = {}
    for seed in range(repeats):
        for name, make in methods(seed).items():
            entry = figures.setdefault(
                name, {k: [] for k in ("ev", "acc", "s", "pev", "ps")}
            )
            start = time.perf_counter()
            model = make().fit(X)
            entry["s"].append(time.perf_counter() - start)
            entry["ev"].append(explained_variance(model, X))
            pipe = make_pipeline(make(), LogisticRegression(max_iter=3000))
            entry["acc"].append(cross_val_score(pipe, X, y, cv=5).mean())
            start = time.perf_counter()
            on_patches = make().fit(patches)
            entry["ps"].append(time.perf_counter() - start)
            entry["pev"].append(explained_variance(on_patches, patches))
    digits_rows, patch_rows = [], []
    for name, entry in figures.items():
        med = {key: statistics.median(values) for key, values in entry.items()}
        digits_rows.append(
            {
                "method": name,
                "explained_variance": med["ev"],
                "cv_accuracy": med["acc"],
                "fit_s": med["s"],
            }
        )
        patch_rows.append(
            {"method": name, "explained_variance": med["pev"], "fit_s": med["ps"]}
        )
    return digits_rows, patch_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    digits_rows, patch_rows = run(args.repeats)
    report = (
        "## Digits: features -> LogisticRegression, "
        f"medians of {args.repeats} seeds\n\n"
        + markdown(digits_rows)
        + "\n\n## 10,000 raw 8x8 natural-image patches\n\n"
        + markdown(patch_rows)
        + "\n"
    )
    write_results("conv", report, {"digits": digits_rows, "patches": patch_rows})


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
