"""Draw the figure at the top of README.rst: ``python docs/make_readme_figure.py``.

Left: the atoms a KL-sparse autoencoder learns from whitened natural-image
patches (the CS294A experiment). Right: explained variance against the number
of non-zero codes per row on scikit-learn's digits, PCA against a k-sparse
autoencoder of 128 atoms.
"""

from pathlib import Path

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from skae import KLSparseAutoencoder, KSparseAutoencoder
from skae.datasets import make_image_patches
from skae.plotting import DictionaryDisplay

OUTPUT = Path(__file__).parent / "_static" / "readme.png"


def main() -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4), layout="constrained")

    patches = make_image_patches(10_000, preprocessing="cs294a", random_state=0)
    kl = KLSparseAutoencoder(
        n_components=25,
        sparsity_target=0.01,
        output_activation="sigmoid",
        max_iter=200,
        random_state=0,
    ).fit(patches)
    DictionaryDisplay.from_estimator(kl, image_shape=(8, 8), ax=left)
    left.set_title("KLSparseAutoencoder atoms:\nedge detectors from image patches")

    X = load_digits().data / 16
    sizes = [2, 4, 8, 16, 32]
    pca_scores = [
        PCA(n, random_state=0).fit(X).explained_variance_ratio_.sum() for n in sizes
    ]
    sae_scores = [
        KSparseAutoencoder(128, k, max_iter=60, random_state=0).fit(X).score(X)
        for k in sizes
    ]
    right.plot(sizes, pca_scores, "o-", label="PCA(n)")
    right.plot(sizes, sae_scores, "s-", label="KSparseAutoencoder(128, k)")
    right.set_xscale("log", base=2)
    right.set_xticks(sizes, [str(s) for s in sizes])
    right.set_xlabel("non-zero codes per digit (n or k)")
    right.set_ylabel("explained variance")
    right.set_title("Digits: reconstruction vs sparsity")
    right.legend(loc="lower right")
    right.grid(alpha=0.3)

    fig.savefig(OUTPUT, dpi=90)
    print(f"saved {OUTPUT}")
    for n, p, s in zip(sizes, pca_scores, sae_scores, strict=True):
        print(f"{n:3d}  PCA {p:.3f}  KSparse {s:.3f}")


if __name__ == "__main__":
    main()
