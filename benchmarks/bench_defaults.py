"""Time to quality of the defaults: what a user who never changes them gets.

Two problems, each in one run, side by side:

* **patches**: 50,000 8x8 patches of scikit-learn's two sample photographs,
  each with its mean removed, standardized per pixel, coded with 256 atoms
  and 8 non-zeros a row:
  ``KSparseAutoencoder(256, k=8)`` with each encoder (and BatchTopK) at its
  defaults, against MiniBatchDictionaryLearning(256, one pass) + OMP(8), and
  against ``overcomplete``'s TopKSAE and MpSAE at the settings of its README
  (Adam at 5e-4, 20 epochs; batches of 1024) when that package is installed.
  Fit and transform seconds, FVU on the rows, and the seconds of training
  until the FVU first reaches each level (scoring not timed).
* **recovery**: 100,000 synthetic rows of 256 features made of 8 of 1024
  unit atoms, fit by ``KSparseAutoencoder(1024, k=8)`` at its defaults:
  mean best cosine of the true atoms, dead latents, seconds.

``--sweep NAME`` instead runs the grid the defaults were chosen from
(``plain``, ``mp`` or ``recovery``) and writes ``results/sweep_NAME.md``;
``--sweep penalties`` fits L1, KL and JumpReLU at their defaults and at the
top-k's shorter plan (``max_iter='auto'``, cosine, 5% warm-up) on 20,000
patches and on the digits, and reports seconds, held-out explained variance
and mean L0 (the penalties' sparsity depends on how long they train).

Run: ``python benchmarks/bench_defaults.py [--quick] [--sweep plain|mp|recovery]``,
or as the ``defaults`` section of ``benchmarks/run.py``. ``--quick`` uses
10,000 patches and 20,000 recovery rows.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import statistics
import sys
import time
import types

import numpy as np
import torch
from _common import markdown, write_results
from sklearn.decomposition import MiniBatchDictionaryLearning
from sklearn.preprocessing import StandardScaler

from skae import (
    JumpReLUSparseAutoencoder,
    KLSparseAutoencoder,
    KSparseAutoencoder,
    L1SparseAutoencoder,
)
from skae._engine.training import Callback, added_callbacks
from skae.datasets import make_image_patches, make_sparse_signals
from skae.inspect import dictionary_recovery

LEVELS = (0.30, 0.25, 0.22, 0.205, 0.15, 0.14, 0.13)
N_SCORED = 5000  # rows scored after every epoch for the time to each level


def patches(n_rows: int = 50_000) -> np.ndarray:
    """Gray-level patches, each with its mean removed (its brightness), then
    standardized per pixel."""
    X = make_image_patches(n_rows, random_state=0)
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
        **l0_spread(codes),
        "epochs": model.n_iter_,
        "points": timeline.points,
    }


def l0_spread(codes: np.ndarray) -> dict:
    """The mean non-zeros of a row, and the 5th and 95th percentiles (which
    differ where the code adapts to the row, as BatchTopK's does)."""
    counts = np.count_nonzero(codes, axis=1)
    low, high = np.percentile(counts, [5, 95])
    return {"L0": float(counts.mean()), "L0 5-95%": f"{low:g}-{high:g}"}


def overcomplete_sae():
    """``overcomplete.sae`` if that package is installed, else None.

    Its top-level package imports its vision models (torchvision, timm),
    which fail to import where torchvision does not match the installed
    torch; the SAE subpackage needs only torch and einops, so it is then
    imported without them."""
    spec = importlib.util.find_spec("overcomplete")
    if spec is None:
        return None
    try:
        return importlib.import_module("overcomplete.sae")
    except Exception:  # a broken optional dependency of theirs
        for name in [m for m in sys.modules if m.startswith("overcomplete")]:
            del sys.modules[name]
        package = types.ModuleType("overcomplete")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["overcomplete"] = package
        return importlib.import_module("overcomplete.sae")


#: overcomplete's README recipe: Adam at 5e-4, 20 epochs, the MSE alone.
OVERCOMPLETE = {"learning_rate": 5e-4, "epochs": 20, "batch_size": 1024}


def time_overcomplete(X: np.ndarray, sae, kind: str) -> dict:
    """Train ``overcomplete``'s TopKSAE or MpSAE with its own ``train_sae``,
    one epoch a call so that the FVU can be scored between epochs."""
    torch.manual_seed(0)
    if kind == "TopKSAE":
        model = sae.TopKSAE(X.shape[1], nb_concepts=256, top_k=8)
    else:
        model = sae.MpSAE(X.shape[1], nb_concepts=256, k=8)
    data = torch.from_numpy(X)
    loader = torch.utils.data.DataLoader(
        data, batch_size=OVERCOMPLETE["batch_size"], shuffle=True
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=OVERCOMPLETE["learning_rate"])

    def criterion(x, x_hat, pre_codes, codes, dictionary):
        return (x - x_hat).square().mean()

    scored = data[:N_SCORED]
    points, training = [], 0.0
    for _ in range(OVERCOMPLETE["epochs"]):
        began = time.perf_counter()
        sae.train_sae(model, loader, criterion, optimizer, nb_epochs=1, monitoring=0)
        training += time.perf_counter() - began
        model.eval()
        with torch.no_grad():
            points.append((training, fvu(X[:N_SCORED], model(scored)[2].numpy())))
    began = time.perf_counter()
    with torch.no_grad():
        codes = model.encode(data)[1].numpy()
    transform_s = time.perf_counter() - began
    with torch.no_grad():
        reconstruction = model.decode(torch.from_numpy(codes)).numpy()
    return {
        "fit s": training,
        "transform s": transform_s,
        "FVU": fvu(X, reconstruction),
        **l0_spread(codes),
        "epochs": OVERCOMPLETE["epochs"],
        "points": points,
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
        **l0_spread(codes),
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
    sae = overcomplete_sae()
    if sae is not None:
        for kind in ("TopKSAE", "MpSAE"):
            results[f"overcomplete {kind}(256, 8)"] = time_overcomplete(X, sae, kind)
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
            "L0 5-95%": r["L0 5-95%"],
            "FVU / MBDL's": r["FVU"] / reference["FVU"],
            "MBDL's s / total s": reference_s / total,
        }
        for level in LEVELS:
            row[f"s to {level:g}"] = first_reached(r["points"], level)
        rows.append(row)
    return rows, results


def recovery_data(n_rows: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    X, atoms, _ = make_sparse_signals(n_rows, 256, 1024, 8, noise=0.05, random_state=0)
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


def defaults(*, quick: bool) -> tuple[str, dict]:
    """The two problems at the defaults: the report and the raw figures."""
    n_patches, n_recovery = (10_000, 20_000) if quick else (50_000, 100_000)
    X = patches(n_patches)
    KSparseAutoencoder(256, k=8, max_iter=1, random_state=0).fit(X[:5000])  # warm-up
    rows, results = patch_rows(X)
    X_rec, atoms = recovery_data(n_recovery)
    recovery = [recovery_row(X_rec, atoms, "KSparse(1024, k=8) defaults")]
    report = "\n\n".join(
        [
            "## Time to quality of the defaults",
            f"{n_patches:,} 8x8 patches (each patch's mean removed, then "
            "standardized per pixel), 256 atoms, 8 non-zeros; "
            f"{torch.get_num_threads()} threads. FVU on the training rows; "
            f"'s to L': seconds of training until the FVU of {N_SCORED} of "
            "them first reaches L (scoring not timed; MBDL's one point is its "
            "whole fit).",
            markdown(rows),
            "## Dictionary recovery at the defaults",
            f"{n_recovery:,} rows, 256 features, 8 of 1024 true atoms each, "
            "noise 0.05.",
            markdown(recovery),
        ]
    )
    data = {"patches": results, "recovery": recovery}
    return report, data


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


#: The penalty estimators, and the plans compared for their defaults.
PENALTIES = {
    "L1": L1SparseAutoencoder,
    "KL": KLSparseAutoencoder,
    "JumpReLU": JumpReLUSparseAutoencoder,
}
SHORT_PLAN = {
    "max_iter": "auto",
    "learning_rate_schedule": "cosine",
    "warmup": 0.05,
    "batch_size": 1024,
}
PENALTY_PLANS = {
    "defaults": {},
    "auto, cosine, batch 1024": SHORT_PLAN,
    "same, 3x learning_rate": SHORT_PLAN | {"learning_rate_factor": 3},
    "auto, cosine, batch 256": SHORT_PLAN | {"batch_size": 256},
}


def penalty_sweep() -> None:
    from sklearn.datasets import load_digits

    X = patches(22_000)
    digits = (load_digits().data / 16).astype(np.float32)
    problems = {
        "patches": (X[:20_000], X[20_000:]),
        "digits": (digits[:1500], digits[1500:]),
    }
    rows = []
    for (name, estimator), (data, (train, test)), (plan, params) in itertools.product(
        PENALTIES.items(), problems.items(), PENALTY_PLANS.items()
    ):
        params = dict(params)
        if factor := params.pop("learning_rate_factor", None):
            params["learning_rate"] = estimator().learning_rate * factor
        model = estimator(256, random_state=0, **params)
        began = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - began
        codes = model.transform(test)
        rows.append(
            {
                "estimator": name,
                "data": data,
                "plan": plan,
                "fit s": fit_s,
                "epochs": model.n_iter_,
                "held-out EV": model.score(test),
                "mean L0": float(np.count_nonzero(codes, axis=1).mean()),
                "dead": model.n_dead_components_,
            }
        )
        print(rows[-1], flush=True)
    write_results("sweep_penalties", "## Sweep: penalties\n\n" + markdown(rows), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", choices=[*sorted(SWEEPS), "penalties"])
    parser.add_argument("--quick", action="store_true", help="smaller data")
    args = parser.parse_args()
    if args.sweep == "penalties":
        penalty_sweep()
    elif args.sweep:
        sweep(args.sweep)
    else:
        write_results("defaults", *defaults(quick=args.quick))


if __name__ == "__main__":
    main()
