"""Write the frozen model files that tests/test_persistence.py loads.

Run once per model format version (``python tests/data/make_format_fixtures.py``)
and commit the files: later versions of skae must keep loading them, and give
the outputs stored beside them. Never regenerate the files of a released
format to make a test pass.
"""

from pathlib import Path

import numpy as np

import skae

FORMAT = 1
HERE = Path(__file__).parent


def fixtures() -> dict:
    return {
        "ksparse": skae.KSparseAutoencoder(16, k=3, aux_k=2, max_iter=3),
        "ksparse-batch": skae.KSparseAutoencoder(
            16, k=3, k_mode="batch", matryoshka_sizes=(4, 8), max_iter=3
        ),
        "l1": skae.L1SparseAutoencoder(8, alpha=0.1, max_iter=3),
        "l2": skae.L2SparseAutoencoder(8, alpha=0.1, max_iter=3),
        "kl": skae.KLSparseAutoencoder(8, max_iter=3, early_stopping=True),
        "jumprelu": skae.JumpReLUSparseAutoencoder(8, sparsity_weight=0.01, max_iter=3),
        "stacked": skae.StackedSparseAutoencoder((8, 4), sparsity="l1", max_iter=2),
        "conv": skae.ConvSparseAutoencoder(
            image_shape=(2, 3), n_components=3, kernel_size=3, max_iter=3
        ),
        "outlier": skae.SparseAutoencoderOutlierDetector(
            skae.L1SparseAutoencoder(8, alpha=0.1, max_iter=3)
        ),
    }


def main(names: list[str]) -> None:
    """Write the fixtures named, or all when none is: a new estimator's file
    is added beside the frozen ones, which stay as they were written."""
    X = np.random.RandomState(0).randn(60, 6)
    for name, estimator in fixtures().items():
        if names and name not in names:
            continue
        if "random_state" in estimator.get_params():
            estimator.set_params(random_state=0)
        estimator.fit(X)
        path = HERE / f"format{FORMAT}-{name}.skae"
        path.unlink(missing_ok=True)
        skae.save(estimator, path)
        outputs = {"X": X, "score_samples": estimator.score_samples(X)}
        if hasattr(estimator, "transform"):
            outputs["transform"] = estimator.transform(X)
        np.savez(HERE / f"format{FORMAT}-{name}.npz", **outputs)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
