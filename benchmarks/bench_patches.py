"""The CS294A experiment: a KL sparse autoencoder on 8 x 8 natural-image patches.

Fits ``KLSparseAutoencoder`` with the CS294A settings (25 sigmoid units,
rho = 0.01, sigmoid outputs) to 10,000 whitened patches of scikit-learn's
sample photographs and reports the mean activation of the units against
rho, the explained variance, and how localized the atoms are, next to PCA
with as many components. Localization is the share of an atom's energy (its
mean removed) in its best 4 x 4 window, a quarter of the patch.

Run ``python benchmarks/bench_patches.py``; it prints a markdown table,
writes it under ``benchmarks/results/``, and, when matplotlib is installed,
saves the atoms as ``benchmarks/results/patches_atoms.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from _common import RESULTS, write_results
from sklearn.decomposition import PCA

from skae import KLSparseAutoencoder
from skae.datasets import make_image_patches
from skae.metrics import atom_localization


def window_energy(atoms: np.ndarray) -> np.ndarray:
    return atom_localization(atoms, (8, 8), 4)


def save_atoms(atoms: np.ndarray, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(5, 5, figsize=(5, 5))
    for atom, ax in zip(atoms, axes.ravel(), strict=True):
        ax.imshow(atom.reshape(8, 8), cmap="gray")
        ax.axis("off")
    fig.suptitle("KLSparseAutoencoder atoms, 8x8 patches")
    fig.savefig(path, dpi=80)


def main() -> None:
    X = make_image_patches(10_000, preprocessing="cs294a", random_state=0)
    rows = []
    start = time.perf_counter()
    sae = KLSparseAutoencoder(
        n_components=25,
        sparsity_target=0.01,
        output_activation="sigmoid",
        max_iter=200,
        random_state=0,
    ).fit(X)
    seconds = time.perf_counter() - start
    rho_hat = sae.activation_frequency_
    rows.append(
        {
            "method": "KLSparseAutoencoder(25, rho=0.01)",
            "explained_variance": sae.score(X),
            "mean_activation": (
                f"{rho_hat.mean():.4f} ({rho_hat.min():.4f}-{rho_hat.max():.4f})"
            ),
            "localization": float(window_energy(sae.components_).mean()),
            "fit_s": seconds,
            "epochs": sae.n_iter_,
        }
    )
    start = time.perf_counter()
    pca = PCA(n_components=25, random_state=0).fit(X)
    rows.append(
        {
            "method": "PCA(25)",
            "explained_variance": float(pca.explained_variance_ratio_.sum()),
            "mean_activation": "-",
            "localization": float(window_energy(pca.components_).mean()),
            "fit_s": time.perf_counter() - start,
            "epochs": "-",
        }
    )
    random_atoms = np.random.RandomState(0).standard_normal((1000, 64))
    lines = [
        "| method | explained var | mean activation (min-max) | localization "
        "| fit s | epochs |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['explained_variance']:.3f} | {r['mean_activation']} "
            f"| {r['localization']:.3f} | {r['fit_s']:.2f} | {r['epochs']} |"
        )
    report = (
        "## CS294A patches: 10,000 whitened 8x8 patches, rho = 0.01\n\n"
        + "\n".join(lines)
        + "\n\nLocalization of random atoms: "
        + f"{window_energy(random_atoms).mean():.3f}\n"
    )
    write_results("patches", report, rows)
    save_atoms(sae.components_, RESULTS / "patches_atoms.png")


if __name__ == "__main__":
    main()
