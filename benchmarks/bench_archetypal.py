"""Archetypal dictionaries: stability across seeds against reconstruction.

For each model, free and archetypal dictionaries (``dictionary='archetypal'``
at several ``relaxation`` values) are fitted with ``--seeds`` seeds on the
same data. Stability is the mean, over the atoms of one seed's dictionary,
of the best absolute cosine with an atom of another seed's (1: the same
dictionary up to order, sign and scale), averaged over the pairs of seeds.
Reconstruction is the explained variance on held-out rows, the median over
seeds, at the same ``k`` or ``alpha``.

Data: 8 x 8 standardized natural-image patches (``make_image_patches``), and
synthetic signals that are sums of 8 of 256 known atoms
(``make_sparse_signals``), whose recovery (mean best cosine with the true
atoms) is reported too.

Run ``python benchmarks/bench_archetypal.py [--seeds 3] [--quick]``; it
prints markdown tables and writes them, with JSON, under
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import warnings

import numpy as np
from _common import markdown, write_results

from skae import KSparseAutoencoder, L1SparseAutoencoder
from skae.datasets import make_image_patches, make_sparse_signals
from skae.inspect import dictionary_recovery


def stability(dictionaries: list[np.ndarray]) -> float:
    """Mean best |cosine| between the atoms of two seeds' dictionaries,
    averaged over every ordered pair of seeds."""
    scores = [
        dictionary_recovery(a, b).mean_best_cosine
        for a, b in itertools.permutations(dictionaries, 2)
    ]
    return statistics.mean(scores)


def run(name, make, X_train, X_test, seeds, true_atoms=None) -> list[dict]:
    rows = []
    settings = [("free", None), *(("archetypal", r) for r in (0.0, 0.1, 1.0))]
    for dictionary, relaxation in settings:
        fits, scores, times = [], [], []
        for seed in range(seeds):
            extra = {} if relaxation is None else {"relaxation": relaxation}
            model = make(dictionary=dictionary, random_state=seed, **extra)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X_train)
            times.append(time.perf_counter() - start)
            fits.append(model.components_)
            scores.append(model.score(X_test))
        row = {
            "data": name,
            "dictionary": dictionary
            if relaxation is None
            else f"archetypal ({relaxation:g})",
            "stability": stability(fits),
            "held-out EV": statistics.median(scores),
            "fit s": statistics.median(times),
        }
        row["true-atom recovery"] = "-"
        if true_atoms is not None:
            row["true-atom recovery"] = statistics.median(
                dictionary_recovery(true_atoms, f).mean_best_cosine for f in fits
            )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller data")
    args = parser.parse_args()
    n = 5_000 if args.quick else 20_000
    patches = make_image_patches(2 * n, random_state=0)
    signals, atoms, _ = make_sparse_signals(2 * n, 64, 256, 8, random_state=0)
    tables = []
    for model_name, make in [
        ("KSparse(256, k=8)", lambda **p: KSparseAutoencoder(256, k=8, **p)),
        ("L1(256, alpha=0.3)", lambda **p: L1SparseAutoencoder(256, alpha=0.3, **p)),
    ]:
        rows = run("patches", make, patches[:n], patches[n:], args.seeds)
        rows += run(
            "signals", make, signals[:n], signals[n:], args.seeds, true_atoms=atoms
        )
        tables.append(f"### {model_name}\n\n" + markdown(rows))
    report = (
        "## Archetypal dictionaries: stability across seeds\n\n"
        f"{n} training and {n} held-out rows, {args.seeds} seeds, defaults "
        "otherwise.\n\n" + "\n\n".join(tables) + "\n"
    )
    write_results("archetypal", report, {"tables": tables})


if __name__ == "__main__":
    main()
