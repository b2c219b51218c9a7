"""Quality sections of the benchmark suite: what sparsity costs in
reconstruction, how long skae takes to reach a given quality, and whether it
finds known atoms.

* :func:`frontier`: held-out FVU against mean L0 for KSparse, L1, JumpReLU
  and KL autoencoders, PCA and MiniBatchDictionaryLearning + OMP;
* :func:`time_to_quality`: seconds of training until the held-out explained
  variance first reaches stated targets, skae vs MiniBatchDictionaryLearning;
* :func:`recovery`: recovery of a known dictionary, with and without the
  auxiliary loss that revives dead latents;
* :func:`anomaly`: ROC AUC of novelty detection with skae's outlier detector
  vs IsolationForest, PCA's reconstruction error and LocalOutlierFactor.

Each returns ``(markdown report, JSON-serializable raw data)`` for ``run.py``
and draws its plot into ``results/<section>.png``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import RESULTS, markdown
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.decomposition import PCA, MiniBatchDictionaryLearning
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor
from sklearn.preprocessing import StandardScaler

from skae import (
    JumpReLUSparseAutoencoder,
    KLSparseAutoencoder,
    KSparseAutoencoder,
    L1SparseAutoencoder,
    SparseAutoencoderOutlierDetector,
)
from skae.datasets import make_image_patches, make_sparse_signals
from skae.inspect import dictionary_recovery

# ------------------------------------------------------------------ helpers


def fvu(X: np.ndarray, reconstruction: np.ndarray) -> float:
    """Fraction of variance unexplained, ``1 - explained variance``:
    ``sum ||x - x_hat||^2 / sum ||x - mean(X)||^2`` over the rows of X."""
    X = np.asarray(X, dtype=np.float64)
    residual = np.square(X - reconstruction).sum()
    return float(residual / np.square(X - X.mean(axis=0)).sum())


def mean_l0(codes: np.ndarray) -> float:
    """Mean number of non-zero codes per row."""
    return float(np.count_nonzero(codes, axis=1).mean())


def keep_largest(codes: np.ndarray, n_kept: int) -> np.ndarray:
    """Each row's ``n_kept`` largest codes, the others set to zero."""
    kept = np.argpartition(-codes, n_kept - 1, axis=1)[:, :n_kept]
    out = np.zeros_like(codes)
    np.put_along_axis(out, kept, np.take_along_axis(codes, kept, axis=1), axis=1)
    return out


def standardized_split(X: np.ndarray, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows and the last ``n_test`` rows held out, both standardized
    with the training rows' statistics, as float32 (skae trains in float32)."""
    scaler = StandardScaler().fit(X[:-n_test])
    return (
        scaler.transform(X[:-n_test]).astype(np.float32),
        scaler.transform(X[-n_test:]).astype(np.float32),
    )


def timed(fit: Callable[[], object]) -> float:
    start = time.perf_counter()
    fit()
    return time.perf_counter() - start


def warm_up() -> None:
    """One tiny fit of each kind, so that no timed fit pays torch's and the
    BLAS libraries' first-call costs."""
    X = np.random.RandomState(0).standard_normal((512, 16)).astype(np.float32)
    KSparseAutoencoder(32, k=4, max_iter=2, random_state=0).fit(X)
    MiniBatchDictionaryLearning(32, max_iter=1, random_state=0).fit(X)


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, name: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.png"
    fig.savefig(path, dpi=100)
    return path


def seconds_text(seconds: float) -> str:
    return "not reached" if math.isinf(seconds) else f"{seconds:.2f}"


# ----------------------------------------------------------------- frontier

WIDTH = 256  # dictionary size of every method on the 64-feature data sets


def frontier_data(n_samples: int) -> dict[str, np.ndarray]:
    """The two 64-feature data sets of the frontier, ``n_samples`` rows each."""
    patches = make_image_patches(n_samples, preprocessing="cs294a", random_state=0)
    signals, _, _ = make_sparse_signals(
        n_samples, 64, 256, 8, noise=0.05, random_state=0
    )
    return {"patches": patches, "synthetic": signals}


def frontier_settings(quick: bool) -> dict:
    """Sizes and grids of the frontier."""
    return {
        "n_train": 10_000 if quick else 50_000,
        "n_test": 2_000 if quick else 10_000,
        "epochs": 30 if quick else 50,
        "mbdl_max_iter": 10 if quick else 20,
        "l0_grid": (2, 4, 8, 16, 32) if quick else (1, 2, 4, 8, 16, 32),
        "alphas": (0.5, 1.0, 2.0, 4.0, 8.0),
        # JumpReLU's thresholds settle near sqrt(sparsity_weight): mean L0
        # from about 32 down to 2 on both data sets.
        "sparsity_weights": (0.1, 0.3, 1.0, 3.0, 6.0),
        "rhos": (0.05,) if quick else (0.02, 0.05, 0.1),
    }


def frontier_rows(
    X_train: np.ndarray, X_test: np.ndarray, settings: dict
) -> list[dict]:
    """One row per model and sparsity level: mean L0 and FVU on X_test."""
    l0_grid, epochs = settings["l0_grid"], settings["epochs"]
    rows = []

    def add(method, setting, codes, reconstruction, fit_s, model):
        rows.append(
            {
                "method": method,
                "setting": setting,
                "l0": mean_l0(codes),
                "fvu": fvu(X_test, reconstruction),
                "fit_s": fit_s,
                "epochs": getattr(model, "n_iter_", None),
            }
        )

    for n_kept in l0_grid:
        pca = PCA(n_components=n_kept, random_state=0)
        fit_s = timed(lambda pca=pca: pca.fit(X_train))
        codes = pca.transform(X_test)
        reconstruction = pca.inverse_transform(codes)
        add("PCA", f"n_components={n_kept}", codes, reconstruction, fit_s, pca)

    mbdl = MiniBatchDictionaryLearning(
        WIDTH,
        max_iter=settings["mbdl_max_iter"],
        transform_algorithm="omp",
        random_state=0,
    )
    fit_s = timed(lambda: mbdl.fit(X_train))
    for n_kept in l0_grid:
        codes = mbdl.set_params(transform_n_nonzero_coefs=n_kept).transform(X_test)
        reconstruction = codes @ mbdl.components_
        add("MBDL+OMP", f"OMP n_nonzero={n_kept}", codes, reconstruction, fit_s, mbdl)

    for k in l0_grid:
        sae = KSparseAutoencoder(WIDTH, k=k, max_iter=epochs, random_state=0)
        fit_s = timed(lambda sae=sae: sae.fit(X_train))
        codes = sae.transform(X_test)
        add("KSparse", f"k={k}", codes, sae.inverse_transform(codes), fit_s, sae)

    for alpha in settings["alphas"]:
        sae = L1SparseAutoencoder(WIDTH, alpha=alpha, max_iter=epochs, random_state=0)
        fit_s = timed(lambda sae=sae: sae.fit(X_train))
        codes = sae.transform(X_test)
        add("L1", f"alpha={alpha:g}", codes, sae.inverse_transform(codes), fit_s, sae)

    for weight in settings["sparsity_weights"]:
        sae = JumpReLUSparseAutoencoder(
            WIDTH, sparsity_weight=weight, max_iter=epochs, random_state=0
        )
        fit_s = timed(lambda sae=sae: sae.fit(X_train))
        codes = sae.transform(X_test)
        reconstruction = sae.inverse_transform(codes)
        setting = f"sparsity_weight={weight:g}"
        add("JumpReLU", setting, codes, reconstruction, fit_s, sae)

    for rho in settings["rhos"]:
        sae = KLSparseAutoencoder(
            WIDTH, sparsity_target=rho, max_iter=epochs, random_state=0
        )
        fit_s = timed(lambda sae=sae: sae.fit(X_train))
        codes = sae.transform(X_test)
        reconstruction = sae.inverse_transform(codes)
        add("KL dense", f"rho={rho:g}", codes, reconstruction, fit_s, sae)
        if rho == 0.05:
            for n_kept in l0_grid:
                kept = keep_largest(codes, n_kept)
                reconstruction = sae.inverse_transform(kept)
                setting = f"rho={rho:g}, L={n_kept}"
                add("KL top-L", setting, kept, reconstruction, fit_s, sae)
    return rows


def frontier_tables(rows: list[dict]) -> str:
    """A table of FVU at each L0 of the grid, and one of the methods whose L0
    follows from a penalty."""
    on_grid = ("PCA", "MBDL+OMP", "KSparse", "KL top-L")
    by_method = {m: [r for r in rows if r["method"] == m] for m in on_grid}
    grid = [
        {"L0": round(row["l0"])} | {m: by_method[m][i]["fvu"] for m in on_grid}
        for i, row in enumerate(by_method["PCA"])
    ]
    penalized = [
        {
            "method": r["method"],
            "setting": r["setting"],
            "mean L0": r["l0"],
            "FVU": r["fvu"],
            "fit s": r["fit_s"],
        }
        for r in rows
        if r["method"] in ("L1", "JumpReLU", "KL dense")
    ]
    fit_s = {m: statistics.median(r["fit_s"] for r in by_method[m]) for m in on_grid}
    return (
        "FVU on held-out rows at L0 non-zeros per row:\n\n"
        + markdown(grid)
        + "\n\nL0 set by a penalty (L1: alpha; JumpReLU: sparsity_weight; "
        "KL: codes never exactly zero):\n\n"
        + markdown(penalized)
        + "\n\nMedian fit s: "
        + ", ".join(f"{m} {s:.2f}" for m, s in fit_s.items() if m != "KL top-L")
        + "."
    )


def plot_frontier(results: dict[str, list[dict]]) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(11, 4.2))
    styles = {
        "PCA": "s-",
        "MBDL+OMP": "^-",
        "KSparse": "o-",
        "L1": "D-",
        "JumpReLU": "P-",
        "KL top-L": "v--",
        "KL dense": "*",
    }
    for ax, (name, rows) in zip(axes, results.items(), strict=True):
        for method, style in styles.items():
            points = sorted((r["l0"], r["fvu"]) for r in rows if r["method"] == method)
            if points:
                ax.plot(*zip(*points, strict=True), style, label=method, ms=6)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("mean L0 (non-zero codes per row)")
        ax.set_ylabel("FVU on held-out rows")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"Reconstruction error against sparsity, {WIDTH} atoms")
    fig.tight_layout()
    path = save(fig, "frontier")
    plt.close(fig)
    return path


def frontier(*, quick: bool) -> tuple[str, object]:
    """FVU against mean L0 on image patches and synthetic sparse data."""
    settings = frontier_settings(quick)
    n_train, n_test = settings["n_train"], settings["n_test"]
    warm_up()
    results = {}
    for name, X in frontier_data(n_train + n_test).items():
        X_train, X_test = standardized_split(X, n_test)
        results[name] = frontier_rows(X_train, X_test, settings)
    path = plot_frontier(results)
    mbdl_epochs = {
        name: next(r["epochs"] for r in rows if r["method"] == "MBDL+OMP")
        for name, rows in results.items()
    }
    sections = [
        f"{n_train} training and {n_test} held-out rows of 64 features, "
        "standardized with the training rows' statistics. **patches**: 8x8 "
        "natural-image patches whitened as in CS294A "
        "(`make_image_patches(preprocessing='cs294a')`); **synthetic**: "
        "`make_sparse_signals(n, 64, n_atoms=256, k=8, noise=0.05)`. Every "
        f"dictionary has {WIDTH} atoms. Autoencoders: {settings['epochs']} "
        "epochs, defaults otherwise (KSparse's aux_k='auto' is on: "
        f"{WIDTH} >= 4 x 64). "
        "MBDL: MiniBatchDictionaryLearning fit once (alpha=1, LARS, "
        f"max_iter={settings['mbdl_max_iter']} with its early stopping: "
        + ", ".join(f"{n:g} epochs on {name}" for name, n in mbdl_epochs.items())
        + "), then OMP with L0 non-zeros. PCA: L0 components. "
        "FVU = 1 - explained variance = sum ||x - x_hat||^2 / "
        "sum ||x - mean||^2 over held-out rows, computed alike for all.",
        "KL codes are sigmoids, never exactly zero: 'KL dense' is the model "
        f"as fit (L0 = {WIDTH}); 'KL top-L' keeps each row's L largest codes "
        "of the rho=0.05 model, zeroes the rest and decodes, which is how a "
        "dense code is made L-sparse.",
    ]
    for name, rows in results.items():
        sections.append(f"### {name}\n\n{frontier_tables(rows)}")
    if path is not None:
        sections.append(f"Plot: `{path.name}`.")
    data = {"settings": settings, "width": WIDTH, "rows": results}
    return "\n\n".join(sections), data


# ---------------------------------------------------------- time to quality

# Held-out explained variance at L0 = 8, per data set: the targets the slower
# method reaches too, and where the two curves cross.
TARGETS = {"patches": (0.5, 0.6, 0.65), "synthetic": (0.7, 0.75, 0.77)}
TIME_K = 8
SKAE_CHUNK = 2048  # rows per KSparse partial_fit call: 8 minibatches of 256
MBDL_BATCH = 256  # rows per MiniBatchDictionaryLearning partial_fit: 1 step

Curve = list[tuple[float, float]]


SCORE_GROWTH = 1.1  # score when the training clock has grown by 10%


def training_curve(
    step: Callable[[np.ndarray], object],
    score: Callable[[], float],
    X_train: np.ndarray,
    chunk: int,
    *,
    seed: int,
    goal: float,
    max_passes: int,
    budget_s: float,
) -> Curve:
    """(training seconds so far, held-out explained variance) as ``step``
    trains on ``chunk`` shuffled rows per call; only ``step`` is timed.

    Scoring after every call would cost more than training for a slow scorer
    (OMP), so a score is taken once the clock has grown by ``SCORE_GROWTH``
    since the last one: a time to target is then at most 10% late. Stops at
    the ``goal`` score, after ``max_passes`` passes, or past ``budget_s``.
    """
    rng = np.random.RandomState(seed)
    clock = 0.0
    curve = []
    for _ in range(max_passes):
        order = rng.permutation(len(X_train))
        for start in range(0, len(order), chunk):
            rows = X_train[order[start : start + chunk]]
            clock += timed(lambda rows=rows: step(rows))
            over = clock > budget_s
            if over or not curve or clock >= SCORE_GROWTH * curve[-1][0]:
                curve.append((clock, score()))
                if curve[-1][1] >= goal or over:
                    return curve
    if curve[-1][0] < clock:
        curve.append((clock, score()))
    return curve


def first_reached(curve: Curve, target: float) -> float:
    return next((s for s, ev in curve if ev >= target), math.inf)


def skae_curve(X_train, X_test, seed, **limits) -> Curve:
    sae = KSparseAutoencoder(WIDTH, k=TIME_K, random_state=seed)
    return training_curve(
        sae.partial_fit,
        lambda: 1 - fvu(X_test, sae.inverse_transform(sae.transform(X_test))),
        X_train,
        SKAE_CHUNK,
        seed=seed,
        **limits,
    )


def mbdl_curve(X_train, X_test, seed, **limits) -> Curve:
    mbdl = MiniBatchDictionaryLearning(
        WIDTH,
        transform_algorithm="omp",
        transform_n_nonzero_coefs=TIME_K,
        random_state=seed,
    )
    return training_curve(
        mbdl.partial_fit,
        lambda: 1 - fvu(X_test, mbdl.transform(X_test) @ mbdl.components_),
        X_train,
        MBDL_BATCH,
        seed=seed,
        **limits,
    )


TIME_METHODS = {
    f"KSparse({WIDTH}, k={TIME_K})": skae_curve,
    f"MBDL({WIDTH})+OMP({TIME_K})": mbdl_curve,
}


def time_rows(name: str, curves: dict[str, list[Curve]]) -> list[dict]:
    """Median seconds to each target of data set ``name``, and the best score."""
    rows = []
    for target in TARGETS[name]:
        row = {"data": name, "target EV": f"{target:g}"}
        for method, runs in curves.items():
            reached = [first_reached(c, target) for c in runs]
            row[f"{method} s"] = seconds_text(statistics.median(reached))
            if any(math.isinf(s) for s in reached):
                n_reached = sum(not math.isinf(s) for s in reached)
                row[f"{method} s"] += f" ({n_reached}/{len(runs)} seeds)"
        rows.append(row)
    last = {
        f"{method} s": f"{statistics.median(c[-1][1] for c in runs):.3f}"
        for method, runs in curves.items()
    }
    rows.append({"data": name, "target EV": "EV at stop"} | last)
    return rows


def plot_time(curves: dict[str, dict[str, list[Curve]]]) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, len(curves), figsize=(11, 4))
    for ax, (name, by_method) in zip(axes, curves.items(), strict=True):
        for method, runs in by_method.items():
            ax.plot(*zip(*runs[0], strict=True), ".-", label=method, ms=3)
        for target in TARGETS[name]:
            ax.axhline(target, color="gray", linestyle=":", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training seconds")
        ax.set_ylabel("explained variance, held-out rows")
        ax.set_title(f"{name} (first seed)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"Explained variance against training time, L0 = {TIME_K}")
    fig.tight_layout()
    path = save(fig, "time_to_quality")
    plt.close(fig)
    return path


def time_to_quality(*, quick: bool) -> tuple[str, object]:
    """Seconds of training to reach each target held-out explained variance."""
    n_train, n_test = (10_000, 2_000) if quick else (50_000, 2_000)
    repeats = 2 if quick else 3
    limits = {"max_passes": 30, "budget_s": 60.0 if quick else 150.0}
    warm_up()
    curves, rows = {}, []
    for name, X in frontier_data(n_train + n_test).items():
        X_train, X_test = standardized_split(X, n_test)
        curves[name] = {
            method: [
                curve(X_train, X_test, seed, goal=max(TARGETS[name]), **limits)
                for seed in range(repeats)
            ]
            for method, curve in TIME_METHODS.items()
        }
        rows += time_rows(name, curves[name])
    path = plot_time(curves)
    notes = [
        f"The frontier's two data sets (64 features, standardized): {n_train} "
        f"training and {n_test} held-out rows. Both methods code with L0 = "
        f"{TIME_K} non-zeros per row and {WIDTH} atoms; the targets are "
        "explained variances (1 - FVU) on the held-out rows, per data set: "
        + "; ".join(
            f"{n} {', '.join(f'{t:g}' for t in ts)}" for n, ts in TARGETS.items()
        )
        + ".",
        f"Seconds of training only, median of {repeats} seeds, until the held-out "
        "score first reaches the target; scoring is not timed. skae: "
        f"`KSparseAutoencoder({WIDTH}, k={TIME_K}).partial_fit` on shuffled "
        f"chunks of {SKAE_CHUNK} rows (8 Adam steps of 256). "
        f"MBDL: `MiniBatchDictionaryLearning({WIDTH}).partial_fit` on "
        f"minibatches of {MBDL_BATCH} rows (one step each), scored with OMP. "
        "Each is scored after a call once its training time has grown by 10% "
        "since its last score, so a time to target is at most 10% late. "
        f"Limits: {limits['max_passes']} passes or "
        f"{limits['budget_s']:g} s of training per run; 'not reached' means "
        "within them. A warm-up fit runs first. 'EV at stop': the held-out "
        "score when the run stopped, at the top target or a limit.",
        markdown(rows),
    ]
    if path is not None:
        notes.append(f"Plot: `{path.name}` (explained variance against seconds).")
    data = {
        "n_train": n_train,
        "n_test": n_test,
        "k": TIME_K,
        "width": WIDTH,
        "targets": TARGETS,
        "limits": limits,
        "repeats": repeats,
        "curves": curves,
    }
    return "\n\n".join(notes), data


# ----------------------------------------------------------------- recovery


def recovery_config(quick: bool) -> dict:
    if quick:
        return {
            "n_samples": 20_000,
            "n_features": 64,
            "width": 256,
            "k": 4,
            "epochs": 40,
        }
    # The target: width 1024, k=8.
    return {"n_samples": 50_000, "n_features": 256, "width": 1024, "k": 8, "epochs": 20}


def plot_recovery(cosines: dict[str, np.ndarray]) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(len(cosines), 1, figsize=(6, 6), sharex=True)
    bins = np.linspace(0, 1, 51)
    for ax, (name, values) in zip(axes, cosines.items(), strict=True):
        ax.hist(values, bins=bins, log=True)
        ax.axvline(0.9, color="gray", linestyle=":")
        ax.set_ylabel("true atoms (log)")
        ax.set_title(name, fontsize="medium")
    axes[-1].set_xlabel("best |cosine| with a learned atom")
    fig.tight_layout()
    path = save(fig, "recovery")
    plt.close(fig)
    return path


def recovery(*, quick: bool) -> tuple[str, object]:
    """How well KSparse and MiniBatchDictionaryLearning recover known atoms."""
    config = recovery_config(quick)
    width, k, epochs = config["width"], config["k"], config["epochs"]
    X, true_atoms, _ = make_sparse_signals(
        config["n_samples"], config["n_features"], width, k, noise=0.05, random_state=0
    )
    X = X.astype(np.float32)
    warm_up()
    with_aux = KSparseAutoencoder(width, k=k, max_iter=epochs, random_state=0)
    models = {
        f"KSparse({width}, k={k}), aux_k='auto'": with_aux,
        f"KSparse({width}, k={k}), aux_k=0": KSparseAutoencoder(
            width, k=k, aux_k=0, max_iter=epochs, random_state=0
        ),
        f"MBDL({width})": MiniBatchDictionaryLearning(width, random_state=0),
    }
    rows, cosines = [], {}
    for name, model in models.items():
        fit_s = timed(lambda model=model: model.fit(X))
        found = dictionary_recovery(true_atoms, model, threshold=0.9)
        cosines[name] = found.best_cosine
        dead = getattr(model, "n_dead_components_", None)
        rows.append(
            {
                "method": name,
                "mean best cos": found.mean_best_cosine,
                "recovered > 0.9": found.recovered_fraction,
                "dead latents": "-" if dead is None else f"{dead / width:.2%}",
                "epochs": f"{model.n_iter_:g}",
                "fit s": fit_s,
            }
        )
    path = plot_recovery(cosines)
    mean_cos = rows[0]["mean best cos"]
    dead = with_aux.n_dead_components_ / width
    met = mean_cos >= 0.9 and dead < 0.01
    notes = [
        f"`make_sparse_signals({config['n_samples']}, {config['n_features']}, "
        f"n_atoms={width}, k={k}, noise=0.05)`; every model has {width} atoms, "
        f"as many as the truth, and fits all rows. KSparse: {epochs} epochs, "
        "learning_rate 3e-3, batch 256 (the defaults); aux_k='auto' means "
        f"aux_k={with_aux.module_.aux_k} here. MBDL: MiniBatchDictionaryLearning "
        "with its defaults (alpha=1, batch 256, its own early stopping). A true "
        "atom is recovered when a learned atom has |cosine| > 0.9 with it; dead "
        "latents never fire on the training rows.",
        markdown(rows),
        "Target (mean best cosine >= 0.9 with under 1% dead latents) for "
        f"KSparse with aux_k='auto': **{'met' if met else 'missed'}** "
        f"({mean_cos:.3f}, {dead:.2%} dead).",
    ]
    if path is not None:
        notes.append(f"Plot: `{path.name}` (best cosines of the true atoms).")
    data = {
        "config": config,
        "rows": rows,
        "target_met": met,
        "best_cosines": {name: c.tolist() for name, c in cosines.items()},
    }
    return "\n\n".join(notes), data


# ------------------------------------------------------------------ anomaly

ANOMALY_SHARE = 0.1  # anomalies in the breast-cancer test sets


class PCAReconstructionError(PCA):
    """PCA whose ``score_samples`` is the negative squared reconstruction
    error (PCA's own is a Gaussian log-likelihood)."""

    def score_samples(self, X):
        reconstruction = self.inverse_transform(self.transform(X))
        return -np.square(X - reconstruction).sum(axis=1)


def anomaly_detectors(n_features: int, epochs: int, seed: int) -> dict[str, object]:
    """The compared detectors, sized for ``n_features``: twice as many
    latents as features and k (and PCA's components) a quarter of them."""
    width, k = 2 * n_features, max(2, n_features // 4)
    return {
        "SAE KSparse": SparseAutoencoderOutlierDetector(
            KSparseAutoencoder(width, k=k, max_iter=epochs, random_state=seed)
        ),
        "SAE L1": SparseAutoencoderOutlierDetector(
            L1SparseAutoencoder(width, max_iter=epochs, random_state=seed)
        ),
        "PCA error": PCAReconstructionError(k, random_state=seed),
        "IsolationForest": IsolationForest(random_state=seed),
        "LOF(novelty=True)": LocalOutlierFactor(novelty=True),
    }


def novelty_split(
    X_normal: np.ndarray, X_anomalous: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows (70% of the normal ones), test rows (the other normal
    ones, then the anomalous ones) and the test rows' anomaly flags, both
    standardized with the training rows' statistics."""
    order = np.random.RandomState(seed).permutation(len(X_normal))
    n_train = round(0.7 * len(X_normal))
    X_train, X_test = X_normal[order[:n_train]], X_normal[order[n_train:]]
    scaler = StandardScaler().fit(X_train)
    X_test = np.vstack([X_test, X_anomalous])
    is_anomaly = np.arange(len(X_test)) >= len(X_test) - len(X_anomalous)
    return (
        scaler.transform(X_train).astype(np.float32),
        scaler.transform(X_test).astype(np.float32),
        is_anomaly,
    )


def anomaly_run(X_train, X_test, is_anomaly, epochs: int, seed: int) -> dict:
    """Every detector's test ROC AUC and fit seconds, and for skae's detectors
    the share of training rows, test normals and test anomalies that
    contamination='auto' flags."""
    result = {}
    for name, detector in anomaly_detectors(X_train.shape[1], epochs, seed).items():
        fit_s = timed(lambda detector=detector: detector.fit(X_train))
        # Minus the normality: higher means more anomalous.
        auc = roc_auc_score(is_anomaly, -detector.score_samples(X_test))
        result[name] = {"auc": float(auc), "fit_s": fit_s}
        if isinstance(detector, SparseAutoencoderOutlierDetector):
            flagged = detector.predict(X_test) == -1
            result[name]["flagged_train"] = float(
                np.mean(detector.predict(X_train) == -1)
            )
            result[name]["flagged_normal"] = float(flagged[~is_anomaly].mean())
            result[name]["flagged_anomaly"] = float(flagged[is_anomaly].mean())
    return result


def median_of(runs: list[dict], method: str, key: str) -> float:
    return statistics.median(run[method][key] for run in runs)


def digits_runs(digits: tuple[int, ...], repeats: int, epochs: int) -> dict:
    """Runs per held-out digit, one per seed: trained on the other digits."""
    X, y = load_digits(return_X_y=True)
    return {
        digit: [
            anomaly_run(
                *novelty_split(X[y != digit], X[y == digit], seed), epochs, seed
            )
            for seed in range(repeats)
        ]
        for digit in digits
    }


def cancer_runs(repeats: int, epochs: int) -> list[dict]:
    """Runs with benign tumours as normal rows and a fresh draw of malignant
    ones, ANOMALY_SHARE of each test set, as anomalies."""
    X, y = load_breast_cancer(return_X_y=True)
    benign, malignant = X[y == 1], X[y == 0]
    n_test_normal = len(benign) - round(0.7 * len(benign))
    n_anomalous = round(n_test_normal * ANOMALY_SHARE / (1 - ANOMALY_SHARE))
    runs = []
    for seed in range(repeats):
        rng = np.random.RandomState(seed)
        drawn = malignant[rng.choice(len(malignant), n_anomalous, replace=False)]
        runs.append(anomaly_run(*novelty_split(benign, drawn, seed), epochs, seed))
    return runs


def anomaly_tables(digit_runs: dict, cancer: list[dict]) -> list[str]:
    methods = list(cancer[0])
    per_digit = [
        {"held out": str(digit)} | {m: median_of(runs, m, "auc") for m in methods}
        for digit, runs in digit_runs.items()
    ]
    per_digit.append(
        {"held out": "mean"}
        | {m: statistics.mean(row[m] for row in per_digit) for m in methods}
    )
    cancer_rows = []
    for m in methods:
        q1, median, q3 = np.percentile([run[m]["auc"] for run in cancer], [25, 50, 75])
        cancer_rows.append(
            {"method": m, "median AUC": median, "quartiles": f"{q1:.3f}-{q3:.3f}"}
        )
    all_digit_runs = [run for runs in digit_runs.values() for run in runs]
    auto_rows = [
        {
            "data": data,
            "detector": m,
            "flagged training rows": median_of(runs, m, "flagged_train"),
            "flagged test normals": median_of(runs, m, "flagged_normal"),
            "flagged test anomalies": median_of(runs, m, "flagged_anomaly"),
        }
        for data, runs in (("digits", all_digit_runs), ("breast cancer", cancer))
        for m in methods
        if "flagged_normal" in runs[0][m]
    ]
    fit_rows = [
        {
            "method": m,
            "digits fit s": median_of(all_digit_runs, m, "fit_s"),
            "breast cancer fit s": median_of(cancer, m, "fit_s"),
        }
        for m in methods
    ]
    return [
        "### digits: ROC AUC per held-out digit\n\n" + markdown(per_digit),
        "### breast cancer: ROC AUC, malignant as the anomaly\n\n"
        + markdown(cancer_rows),
        "### skae's detectors with contamination='auto'\n\n"
        "Median share of the rows that `predict` flags as outliers (Tukey's "
        "fence on the training rows' reconstruction distances). The models "
        "reconstruct their training rows best, so more test normals than "
        "training rows lie beyond the fence:\n\n" + markdown(auto_rows),
        "### median fit seconds\n\n" + markdown(fit_rows),
    ]


def plot_anomaly(digit_runs: dict) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    methods = list(next(iter(digit_runs.values()))[0])
    digits = list(digit_runs)
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(digits) + 3), 4))
    step = 0.8 / len(methods)
    lowest = 1.0
    for i, method in enumerate(methods):
        aucs = [median_of(digit_runs[d], method, "auc") for d in digits]
        lowest = min(lowest, *aucs)
        ax.bar(
            np.arange(len(digits)) + (i - len(methods) / 2 + 0.5) * step,
            aucs,
            step,
            label=method,
        )
    ax.axhline(0.5, color="gray", linestyle=":", lw=1)
    ax.set_xticks(np.arange(len(digits)), [str(d) for d in digits])
    ax.set_xlabel("held-out digit (the anomaly)")
    ax.set_ylabel("ROC AUC, median over seeds")
    ax.set_ylim(min(0.4, lowest - 0.05), 1.0)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Novelty detection on the digits")
    fig.tight_layout()
    path = save(fig, "anomaly")
    plt.close(fig)
    return path


def anomaly(*, quick: bool) -> tuple[str, object]:
    """ROC AUC of skae's outlier detector against IsolationForest, PCA's
    reconstruction error and LocalOutlierFactor, on two novelty tasks."""
    digits = (0, 4, 9) if quick else tuple(range(10))
    digit_repeats, cancer_repeats = (2, 5) if quick else (3, 20)
    epochs = 20 if quick else 30
    warm_up()
    digit_runs = digits_runs(digits, digit_repeats, epochs)
    cancer = cancer_runs(cancer_repeats, epochs)
    path = plot_anomaly(digit_runs)
    notes = [
        "Novelty detection: every detector fits the training rows, all "
        "normal, and scores a test set of held-out normal rows and anomalies; "
        "the table gives the ROC AUC of telling them apart (0.5 is chance). "
        "Features are standardized with a StandardScaler fit on the training "
        "rows. **digits**: `load_digits` (64 pixels); each digit in turn "
        f"({', '.join(map(str, digits))}) is the anomaly, the detectors fit a "
        "random 70% of the other digits' images, and the test set is the "
        "other 30% plus every image of the held-out digit; median over "
        f"{digit_repeats} seeds (split and model). **breast cancer**: "
        "`load_breast_cancer` (30 features, bundled with scikit-learn); the "
        "detectors fit a random 70% of the benign tumours, and the test set "
        "is the other 30% plus malignant tumours drawn at random to make "
        f"{ANOMALY_SHARE:.0%} of it; median and quartiles over "
        f"{cancer_repeats} seeds.",
        "Detectors, untuned: **SAE KSparse** and **SAE L1** are "
        "`SparseAutoencoderOutlierDetector` (contamination='auto') around a "
        "KSparseAutoencoder with 2 x n_features latents and k = n_features / 4 "
        "(128 latents, k=16 on the digits; 60, k=7 on breast cancer) and "
        "around an L1SparseAutoencoder with 2 x n_features latents and "
        f"alpha=1, {epochs} epochs each, other parameters at their defaults; "
        "**PCA error**: PCA with n_features / 4 components (16; 7), scored by "
        "minus its squared reconstruction error as skae's detectors are; "
        "IsolationForest and "
        "LocalOutlierFactor(novelty=True) with their defaults. One warm-up "
        "fit runs first; fit seconds are medians over all runs of a data set.",
    ]
    notes += anomaly_tables(digit_runs, cancer)
    if path is not None:
        notes.append(f"Plot: `{path.name}` (ROC AUC per held-out digit).")
    data = {
        "digits": list(digits),
        "digit_repeats": digit_repeats,
        "cancer_repeats": cancer_repeats,
        "epochs": epochs,
        "anomaly_share": ANOMALY_SHARE,
        "digit_runs": {str(d): runs for d, runs in digit_runs.items()},
        "cancer_runs": cancer,
    }
    return "\n\n".join(notes), data
