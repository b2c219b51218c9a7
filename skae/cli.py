"""The ``skae`` command."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _codes_l0(codes: np.ndarray) -> float:
    return float((codes != 0).sum(axis=1).mean())


def _explained_variance(X: np.ndarray, reconstruction: np.ndarray) -> float:
    return 1.0 - ((X - reconstruction) ** 2).sum() / ((X - X.mean(axis=0)) ** 2).sum()


def run_demo(random_state: int = 0, verbose: int = 0) -> list[dict]:
    """Compare PCA and KSparseAutoencoder features on the digits data.

    Each model is fit on the 1797 8×8 digit images (scaled to [0, 1]); its
    codes feed KMeans (adjusted Rand index against the true digits) and a
    LogisticRegression (5-fold accuracy of the whole pipeline). Raw pixels are
    the reference row.

    Parameters
    ----------
    random_state : int, default=0
        Seed of every model.
    verbose : int, default=0
        Progress bars while the autoencoder trains.

    Returns
    -------
    rows : list of dict
        One dict per method with keys ``method``, ``explained_variance``,
        ``mean_l0``, ``dead_latents``, ``kmeans_ari``, ``cv_accuracy`` and
        ``fit_seconds``.

    Examples
    --------
    >>> from skae.cli import run_demo
    >>> rows = run_demo()  # doctest: +SKIP
    """
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import adjusted_rand_score
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from skae import KSparseAutoencoder

    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    models = {
        "raw pixels": FunctionTransformer(),
        "PCA(16)": PCA(n_components=16, random_state=random_state),
        "KSparse(128, k=16)": KSparseAutoencoder(
            n_components=128, k=16, random_state=random_state, verbose=verbose
        ),
    }
    rows = []
    for name, model in models.items():
        start = time.perf_counter()
        codes = model.fit_transform(X)
        fit_seconds = time.perf_counter() - start
        reconstruction = model.inverse_transform(codes)
        dead = getattr(model, "activation_frequency_", None)
        labels = KMeans(
            n_clusters=10, n_init=10, random_state=random_state
        ).fit_predict(codes)
        classifier = make_pipeline(model, LogisticRegression(max_iter=2000))
        accuracy = cross_val_score(classifier, X, y, cv=5).mean()
        rows.append(
            {
                "method": name,
                "explained_variance": _explained_variance(X, reconstruction),
                "mean_l0": _codes_l0(codes),
                "dead_latents": None if dead is None else int((dead == 0).sum()),
                "kmeans_ari": adjusted_rand_score(y, labels),
                "cv_accuracy": accuracy,
                "fit_seconds": fit_seconds,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """Render demo rows as an aligned text table.

    Parameters
    ----------
    rows : list of dict
        Rows as returned by :func:`run_demo`.

    Returns
    -------
    table : str
        A header, a rule and one line per row.

    Examples
    --------
    >>> from skae.cli import format_table
    >>> row = dict(method="PCA(2)", explained_variance=0.5, mean_l0=2.0,
    ...            dead_latents=None, kmeans_ari=0.25, cv_accuracy=0.75,
    ...            fit_seconds=0.01)
    >>> print(format_table([row]).splitlines()[2])
    PCA(2)      0.500      2.0     -       0.250       0.750   0.01
    """
    header = [
        "method",
        "expl. var",
        "mean L0",
        "dead",
        "KMeans ARI",
        "5-fold acc",
        "fit s",
    ]
    lines = [header]
    for row in rows:
        dead = "-" if row["dead_latents"] is None else str(row["dead_latents"])
        lines.append(
            [
                row["method"],
                f"{row['explained_variance']:.3f}",
                f"{row['mean_l0']:.1f}",
                dead,
                f"{row['kmeans_ari']:.3f}",
                f"{row['cv_accuracy']:.3f}",
                f"{row['fit_seconds']:.2f}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``skae`` command; returns the exit code.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments without the program name; ``sys.argv[1:]``
        when None.

    Returns
    -------
    code : int
        0 on success; argument errors exit with code 2.

    Examples
    --------
    >>> from skae.cli import main
    >>> main(["demo"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(
        prog="skae", description="Sparse autoencoders as scikit-learn estimators."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="compare PCA and KSparseAutoencoder features on the digits data"
    )
    demo.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
    demo.add_argument(
        "-v", "--verbose", action="count", default=0, help="progress bars"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        start = time.perf_counter()
        print("skae demo: digits (1797 x 64) -> KMeans(10) and LogisticRegression")
        print(format_table(run_demo(args.random_state, args.verbose)))
        print(f"total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
