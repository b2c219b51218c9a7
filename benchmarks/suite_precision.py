"""The precision section of the benchmark suite: does ``precision='bfloat16'``
hurt quality?

* :func:`precision`: every estimator fitted twice with the same seed, its
  products in float32 and in bfloat16; held-out explained variance, mean L0
  and fit seconds of each, on natural-image patches (the 64-feature
  estimators) and on digits (the convolutional one).

Returns ``(markdown report, JSON-serializable raw data)`` for ``run.py``.
"""

from __future__ import annotations

import statistics

import numpy as np
from _common import markdown
from sklearn.datasets import load_digits
from suite_quality import fvu, mean_l0, standardized_split, timed, warm_up

from skae import (
    ConvSparseAutoencoder,
    JumpReLUSparseAutoencoder,
    KLSparseAutoencoder,
    KSparseAutoencoder,
    L1SparseAutoencoder,
    StackedSparseAutoencoder,
)
from skae.datasets import make_image_patches

PRECISIONS = ("float32", "bfloat16")
#: A relative rise of the held-out FVU above which bfloat16 counts as hurting.
TOLERANCE = 0.02


def settings(quick: bool) -> dict:
    return {
        "n_train": 10_000 if quick else 50_000,
        "n_test": 2_000 if quick else 10_000,
        "epochs": 20 if quick else 30,
        "seeds": (0, 1) if quick else (0, 1, 2),
    }


def patch_models(epochs: int, seed: int) -> dict:
    """The 64-feature estimators, unfitted, by name."""
    common = {"max_iter": epochs, "random_state": seed}
    return {
        "KSparse k=8": KSparseAutoencoder(256, k=8, **common),
        "KSparse k=8, k_mode='batch'": KSparseAutoencoder(
            256, k=8, k_mode="batch", **common
        ),
        "KSparse k=8, encoder='mp'": KSparseAutoencoder(
            256, k=8, encoder="mp", **common
        ),
        "L1 alpha=1": L1SparseAutoencoder(256, alpha=1.0, **common),
        "JumpReLU sparsity_weight=1": JumpReLUSparseAutoencoder(
            256, sparsity_weight=1.0, **common
        ),
        "KL rho=0.05": KLSparseAutoencoder(256, sparsity_target=0.05, **common),
        "Stacked (256, 64) k=8": StackedSparseAutoencoder(
            (256, 64), sparsity="topk", k=8, **common
        ),
    }


def measure(name: str, model, X_train, X_test) -> dict:
    seconds = timed(lambda: model.fit(X_train))
    codes = model.transform(X_test)
    return {
        "method": name,
        "precision": model.precision,
        "fvu": fvu(X_test, model.inverse_transform(codes)),
        "mean_l0": mean_l0(codes),
        "fit_s": seconds,
    }


def _paired(runs: list[dict]) -> list[dict]:
    """Medians over seeds, float32 and bfloat16 side by side per method."""
    rows = []
    for method in dict.fromkeys(run["method"] for run in runs):
        row = {"method": method}
        for precision in PRECISIONS:
            mine = [
                r for r in runs if r["method"] == method and r["precision"] == precision
            ]
            for key in ("fvu", "mean_l0", "fit_s"):
                row[f"{key} {precision}"] = statistics.median(r[key] for r in mine)
        row["fvu ratio"] = row["fvu bfloat16"] / row["fvu float32"]
        rows.append(row)
    return rows


def _digits() -> tuple[np.ndarray, np.ndarray]:
    images = load_digits().data.astype(np.float32) / 16.0
    return images[:1500], images[1500:]


def precision(*, quick: bool) -> tuple[str, object]:
    """Held-out FVU of every estimator with float32 and bfloat16 products."""
    config = settings(quick)
    warm_up()
    n_total = config["n_train"] + config["n_test"]
    patches = make_image_patches(n_total, preprocessing="cs294a", random_state=0)
    X_train, X_test = standardized_split(patches, config["n_test"])
    images_train, images_test = _digits()
    runs = []
    for seed in config["seeds"]:
        for precision_ in PRECISIONS:
            for name, model in patch_models(config["epochs"], seed).items():
                model.set_params(precision=precision_)
                runs.append(measure(name, model, X_train, X_test))
            conv = ConvSparseAutoencoder(
                image_shape=(8, 8),
                n_components=16,
                kernel_size=5,
                sparsity="l1",
                max_iter=config["epochs"],
                random_state=seed,
                precision=precision_,
            )
            seconds = timed(lambda conv=conv: conv.fit(images_train))
            runs.append(
                {
                    "method": "Conv 16 maps, L1 (digits)",
                    "precision": precision_,
                    "fvu": 1 - conv.score(images_test),
                    "mean_l0": float("nan"),
                    "fit_s": seconds,
                }
            )
    rows = _paired(runs)
    worst = max(rows, key=lambda row: row["fvu ratio"])
    hurt = [row["method"] for row in rows if row["fvu ratio"] > 1 + TOLERANCE]
    verdict = (
        f"Worst held-out FVU ratio, bfloat16 over float32: {worst['fvu ratio']:.3f} "
        f"({worst['method']}). "
        + (
            f"Above the {TOLERANCE:.0%} tolerance: {', '.join(hurt)}."
            if hurt
            else f"Every estimator within {TOLERANCE:.0%}: bfloat16 products "
            "do not hurt quality here."
        )
    )
    report = (
        f"{config['n_train']} CS294A-whitened 8x8 patches, standardized, "
        f"{config['n_test']} held out; {config['epochs']} epochs at the default "
        "batch size; medians over seeds "
        f"{config['seeds']}. Conv: digits scaled to [0, 1], 1500 training "
        "images, the rest held out (its FVU is 1 - `score`). Each estimator is "
        "fitted with precision='float32' and precision='bfloat16' (products "
        "on bfloat16 operands, float32 elsewhere) from the same seed. At "
        "these small widths the products are a small share of the time, so "
        "the seconds say little about speed (see the throughput section).\n\n"
        + markdown(rows)
        + "\n\n"
        + verdict
        + "\n"
    )
    return report, {"settings": config, "runs": runs, "rows": rows, "hurt": hurt}
