"""Time to quality of the defaults: what a user who never changes them gets.

Two problems, each in one run, side by side:

* **patches**: 50,000 8x8 patches of scikit-learn's two sample photographs,
  each with its mean removed, standardized per pixel, coded with 256 atoms
  and 8 non-zeros a row:
  ``KSparseAutoencoder(256, k=8)`` with each encoder (and BatchTopK) at its
  defaults, against MiniBatchDictionaryLearning(256, one pass) + OMP(8).
  Fit and transform seconds, FVU on the rows, and the seconds of training
  until the FVU first reaches each level (scoring not timed).
* **recovery**: 100,000 synthetic rows of 256 features made of 8 of 1024
  unit atoms, fit by ``KSparseAutoencoder(1024, k=8)`` at its defaults:
  mean best cosine of the true atoms, dead latents, seconds.

``--sweep NAME`` instead runs the grid the defaults were chosen from
(``plain``, ``mp`` or ``recovery``) and writes ``results/sweep_NAME.md``.

Run: ``python benchmarks/bench_defaults.py [--sweep plain|mp|recovery]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np
import torch
from _common import markdown, write_results
from sklearn.decomposition import MiniBatchDictionaryLearning
from sklearn.preprocessing import StandardScaler

from skae import KSparseAutoencoder
from skae._engine.training import Callback, added_callbacks
from skae.datasets import make_image_patches, make_sparse_signals
from skae.inspect import dictionary_recovery

LEVELS = (0.30, 0.25, 0.22, 0.205, 0.15, 0.14, 0.13)
N_SCORED = 5000  # rows scored after every epoch for the time to each level


def patches() -> np.ndarray:
    """Gray-level patches, each with its mean removed (its brightness), then
    standardized per pixel."""
    X = make_image_patches(50_000, random_state=0)
    X = X - X.mean(axis=1, keepdims=True)
    return StandardScaler().fit_transform(X).astype(np.float32)


def fvu(X: np.ndarray, reconstruction: np.ndarray) -> float:
    centred = X - X.mean(axis=0)
    return float(np.square(X - reconstruction).sum() / np.square(centred).sum())


class Timeline(Callback):
    """The FVU on fixed rows after every epoch, against seconds of training
    (the scoring itself not counted)."""

    def __init__(self, X: np.ndarray) -> None:
        self.X = torch.from_numpy(X)
        self.points: list[tuple[float, float]] = []
        self.start = self.scoring = 0.0

    def on_train_begin(self, state, module) -> None:
        self.module, self.start, self.scoring = module, time.perf_counter(), 0.0

    @torch.no_grad()
    def on_epoch_end(self, state) -> None:
        began = time.perf_counter()
        self.module.eval()
        x = self.X.to(next(self.module.parameters()).device)
        out = self.module(x).reconstruction.cpu().numpy()
        self.module.train()
        ended = time.perf_counter()
        self.scoring += ended - began
        seconds = ended - self.start - self.scoring
        self.points.append((seconds, fvu(self.X.numpy(), out)))


def first_reached(points, level: float) -> str:
    for seconds, value in points:
        if value <= level:
            return f"{seconds:.1f}"
    return "-"


def time_skae(X: np.ndarray, **params) -> dict:
    timeline = Timeline(X[:N_SCORED])
    model = KSparseAutoencoder(256, k=8, random_state=0, **params)
    began = time.perf_counter()
    with added_callbacks(timeline):
        model.fit(X)
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    codes = model.transform(X)
    transform_s = time.perf_counter() - began
    return {
        "fit s": fit_s,
        "transform s": transform_s,
        "FVU": fvu(X, model.inverse_transform(codes)),
        "L0": float(np.mean(np.count_nonzero(codes, axis=1))),
        "epochs": model.n_iter_,
        "points": timeline.points,
    }


def time_mbdl(X: np.ndarray) -> dict:
    model = MiniBatchDictionaryLearning(
        256,
        max_iter=1,
        transform_algorithm="omp",
        transform_n_nonzero_coefs=8,
        random_state=0,
    )
    began = time.perf_counter()
    model.fit(X)
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    codes = model.transform(X)
    transform_s = time.perf_counter() - began
    return {
        "fit s": fit_s,
        "transform s": transform_s,
        "FVU": fvu(X, codes @ model.components_),
        "L0": float(np.mean(np.count_nonzero(codes, axis=1))),
        "epochs": 1,
        "points": [(fit_s, fvu(X, codes @ model.components_))],
    }


#: KSparseAutoencoder's training defaults before issue 15.
PREVIOUS_DEFAULTS = {
    "learning_rate": 3e-3,
    "learning_rate_schedule": "constant",
    "warmup": 0.0,
    "batch_size": 256,
    "max_iter": 100,
}

PATCH_METHODS = {
    "KSparse(256, k=8), previous defaults": PREVIOUS_DEFAULTS,
    "KSparse(256, k=8)": {},
    "KSparse, encoder='mp'": {"encoder": "mp"},
    "KSparse, encoder='omp'": {"encoder": "omp"},
    "KSparse, k_mode='batch'": {"k_mode": "batch"},
}


def patch_rows(X: np.ndarray) -> tuple[list[dict], dict]:
    results = {"MBDL(256, 1 pass) + OMP(8)": time_mbdl(X)}
    for name, params in PATCH_METHODS.items():
        results[name] = time_skae(X, **params)
    reference = results["MBDL(256, 1 pass) + OMP(8)"]
    reference_s = reference["fit s"] + reference["transform s"]
    rows = []
    for name, r in results.items():
        total = r["fit s"] + r["transform s"]
        row = {
            "method": name,
            "epochs": r["epochs"],
            "fit s": r["fit s"],
            "transform s": r["transform s"],
            "FVU": r["FVU"],
            "mean L0": r["L0"],
            "FVU / MBDL's": r["FVU"] / reference["FVU"],
            "MBDL's s / total s": reference_s / total,
        }
        for level in LEVELS:
            row[f"s to {level:g}"] = first_reached(r["points"], level)
        rows.append(row)
    return rows, results


def recovery_data() -> tuple[np.ndarray, np.ndarray]:
    X, atoms, _ = make_sparse_signals(100_000, 256, 1024, 8, noise=0.05, random_state=0)
    return X.astype(np.float32), atoms


def recovery_row(X, atoms, name: str, **params) -> dict:
    model = KSparseAutoencoder(1024, k=8, random_state=0, **params)
    began = time.perf_counter()
    model.fit(X)
    fit_s = time.perf_counter() - began
    found = dictionary_recovery(atoms, model, threshold=0.9)
    return {
        "method": name,
        "epochs": model.n_iter_,
        "fit s": fit_s,
        "mean best cos": found.mean_best_cosine,
        "dead latents": f"{model.n_dead_components_ / 1024:.2%}",
    }


def defaults() -> None:
    X = patches()
    KSparseAutoencoder(256, k=8, max_iter=1, random_state=0).fit(X[:5000])  # warm-up
    rows, results = patch_rows(X)
    X_rec, atoms = recovery_data()
    recovery = [recovery_row(X_rec, atoms, "KSparse(1024, k=8) defaults")]
    report = "\n\n".join(
        [
            "## Time to quality of the defaults",
            "50,000 8x8 patches (each patch's mean removed, then standardized "
            f"per pixel), 256 atoms, 8 non-zeros; "
            f"{torch.get_num_threads()} threads. FVU on the training rows; "
            f"'s to L': seconds of training until the FVU of {N_SCORED} of "
            "them first reaches L (scoring not timed; MBDL's one point is its "
            "whole fit).",
            markdown(rows),
            "## Dictionary recovery at the defaults",
            "100,000 rows, 256 features, 8 of 1024 true atoms each, noise 0.05.",
            markdown(recovery),
        ]
    )
    data = {
        "patches": {n: {k: v for k, v in r.items()} for n, r in results.items()},
        "recovery": recovery,
    }
    write_results("defaults", report, data)


SWEEPS = {
    "plain": {
        "learning_rate": (3e-3, 1e-2, 3e-2),
        "batch_size": (256, 1024),
        "learning_rate_schedule": ("constant", "cosine"),
        "max_iter": (5, 10, 20),
        "warmup": (0.05,),
    },
    "mp": {
        "encoder": ("mp",),
        "learning_rate": (3e-3, 1e-2, 3e-2),
        "batch_size": (256, 1024),
        "learning_rate_schedule": ("cosine",),
        "max_iter": (3, 5, 10),
        "warmup": (0.05,),
    },
    "recovery": {
        "learning_rate": (3e-3, 1e-2),
        "batch_size": (1024,),
        "learning_rate_schedule": ("cosine",),
        "max_iter": (5, 10, 20),
        "warmup": (0.05,),
    },
}


def sweep(name: str) -> None:
    grid = SWEEPS[name]
    rows = []
    if name == "recovery":
        X, atoms = recovery_data()
    else:
        X = patches()
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=True))
        if name == "recovery":
            row = recovery_row(X, atoms, "", **params, tol=0)
            row.pop("method")
        else:
            r = time_skae(X, **params, tol=0)
            row = {k: r[k] for k in ("fit s", "transform s", "FVU")}
        rows.append({k: v for k, v in params.items() if len(grid[k]) > 1} | row)
        print(rows[-1], flush=True)
    key = "mean best cos" if name == "recovery" else "FVU"
    best = sorted(rows, key=lambda r: r[key], reverse=name == "recovery")
    report = f"## Sweep: {name}\n\n" + markdown(best)
    write_results(f"sweep_{name}", report, rows)
    print("median fit s:", statistics.median(r["fit s"] for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", choices=sorted(SWEEPS))
    args = parser.parse_args()
    if args.sweep:
        sweep(args.sweep)
    else:
        defaults()


if __name__ == "__main__":
    main()
