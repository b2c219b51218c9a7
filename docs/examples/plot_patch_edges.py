"""
==========================================
Edge detectors from natural-image patches
==========================================

This example repeats the experiment of Andrew Ng's CS294A sparse autoencoder
notes: a :class:`~skae.KLSparseAutoencoder` with 25 sigmoid units, each pulled
towards a mean activation of 1%, learns from 8 × 8 patches of whitened
photographs. Its atoms come out as localized, oriented edge detectors, much
like the Gabor-shaped receptive fields of simple cells in the visual cortex.
We measure how localized they are with :func:`skae.metrics.atom_localization`
and compare them with the components of :class:`~sklearn.decomposition.PCA`,
which explain more variance but spread over the whole patch.
"""

# %%
# Whitened patches
# ----------------
# :func:`skae.datasets.make_image_patches` cuts random patches from the two
# photographs that ship with scikit-learn. ``preprocessing="cs294a"`` follows
# the exercise: each photograph is whitened (its 1/f amplitude spectrum
# flattened), each patch has its mean removed and is clipped to ±3 standard
# deviations, and the values are rescaled into [0.1, 0.9] to suit the
# autoencoder's sigmoid outputs.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA

from skae import KLSparseAutoencoder
from skae.datasets import make_image_patches
from skae.metrics import atom_localization, spectral_concentration
from skae.plotting import DictionaryDisplay, LossCurveDisplay

X = make_image_patches(10_000, patch_size=8, preprocessing="cs294a", random_state=0)
print(
    f"{X.shape[0]} patches of {X.shape[1]} pixels, values in [{X.min():.1f}, "
    f"{X.max():.1f}]"
)

# Patches sit around the middle gray 0.5; centre them there to draw them.
display = DictionaryDisplay(X[:25] - 0.5, image_shape=(8, 8)).plot()
display.ax_.set_title("25 whitened patches")

# %%
# A sparse autoencoder with 1% target activation
# ----------------------------------------------
# The settings of the exercise: 25 hidden units, a target mean activation
# ``rho = 0.01`` for each, the default penalty weights (``beta = 3``,
# ``lambda = 1e-4``), sigmoid outputs for data scaled into (0, 1), and the
# exercise's optimizer: L-BFGS on all the patches at once, for at most 400
# iterations. It stops earlier, once an iteration no longer improves the
# loss by a relative ``tol`` for ``n_iter_no_change`` iterations in a row.
sae = KLSparseAutoencoder(
    n_components=25,
    sparsity_target=0.01,
    output_activation="sigmoid",
    solver="lbfgs",
    max_iter=400,
    random_state=0,
).fit(X)

rho_hat = sae.activation_frequency_
print(f"trained for {sae.n_iter_} L-BFGS iterations")
print(
    f"mean activation per unit: {rho_hat.mean():.4f} "
    f"(from {rho_hat.min():.4f} to {rho_hat.max():.4f}), target 0.01"
)

# %%
# The training loss: the reconstruction error plus the sparsity and weight
# penalties, per iteration. Training stops once it has flattened out.
LossCurveDisplay.from_estimator(sae).ax_.set_title("KLSparseAutoencoder")

# %%
# Atoms: sparse autoencoder vs PCA
# --------------------------------
# Each tile is one atom (a row of ``components_``, the decoder's weights),
# scaled to its own maximum: red is positive and blue negative. The sparse
# autoencoder's atoms, most active first, are mostly oriented edges and bars
# at different positions and angles, each concentrated in part of the patch.
# PCA's components, in order of explained variance, are global patterns that
# cover the whole patch, from smooth gradients to checkerboards: the
# eigenvectors of the patches' covariance, which is nearly shift-invariant
# and so has Fourier-like eigenvectors.
pca = PCA(n_components=25, random_state=0).fit(X)

fig, (ax_sae, ax_pca) = plt.subplots(1, 2, figsize=(9, 4.8))
DictionaryDisplay.from_estimator(sae, image_shape=(8, 8), ax=ax_sae)
ax_sae.set_title("KLSparseAutoencoder atoms")
DictionaryDisplay(pca.components_, image_shape=(8, 8)).plot(ax=ax_pca)
ax_pca.set_title("PCA components")
fig.tight_layout()

# %%
# Clean filters: L-BFGS against minibatch Adam
# --------------------------------------------
# The same model trained with minibatch Adam for as many passes over the
# data (its rate decaying along a cosine) learns similar filters that
# reconstruct the patches less well. A clean edge puts nearly
# all its Fourier power into a few frequencies:
# :func:`~skae.metrics.spectral_concentration` is the share of an atom's power
# (its constant term aside) in its 8 strongest frequencies, about 0.38 for
# random atoms.
adam = KLSparseAutoencoder(
    n_components=25,
    sparsity_target=0.01,
    output_activation="sigmoid",
    max_iter=sae.n_iter_,
    learning_rate_schedule="cosine",
    tol=0,
    random_state=0,
).fit(X)
for name, model in {"L-BFGS": sae, "Adam": adam}.items():
    concentration = np.median(spectral_concentration(model.components_, (8, 8)))
    print(
        f"{name:<7} spectral concentration {concentration:.3f}, "
        f"explained variance {model.score(X):.3f}, "
        f"mean activation {model.activation_frequency_.mean():.4f}"
    )

fig, (ax_lbfgs, ax_adam) = plt.subplots(1, 2, figsize=(9, 4.8))
DictionaryDisplay.from_estimator(sae, image_shape=(8, 8), ax=ax_lbfgs)
ax_lbfgs.set_title("solver='lbfgs'")
DictionaryDisplay.from_estimator(adam, image_shape=(8, 8), ax=ax_adam)
ax_adam.set_title("solver='adam'")
fig.tight_layout()

# %%
# How localized are the atoms?
# ----------------------------
# :func:`~skae.metrics.atom_localization` removes each atom's mean and
# returns the share of its energy inside its best 4 × 4 window, a quarter of
# the patch. An atom concentrated in one place scores near 1; random atoms
# score about 0.39. PCA reconstructs the patches far better: it is the best
# linear code of 25 components, while the autoencoder spends its capacity on
# codes where each unit is rarely active.
random_atoms = np.random.RandomState(0).standard_normal((1000, 64))
localization = {
    "KLSparseAutoencoder": atom_localization(sae.components_, (8, 8), 4),
    "PCA": atom_localization(pca.components_, (8, 8), 4),
    "random atoms": atom_localization(random_atoms, (8, 8), 4),
}
explained_variance = {
    "KLSparseAutoencoder": sae.score(X),
    "PCA": pca.explained_variance_ratio_.sum(),
}

print(f"{'atoms':<21} {'explained variance':>18} {'localization':>13}")
for name, values in localization.items():
    ev = explained_variance.get(name)
    ev_text = f"{ev:.3f}" if ev is not None else "-"
    print(f"{name:<21} {ev_text:>18} {values.mean():>13.3f}")

# %%
# The distributions tell the same story as the means: most of the
# autoencoder's atoms lie to the right of the random atoms, while PCA's
# components overlap them.
fig, ax = plt.subplots()
bins = np.linspace(0.2, 1.0, 33)
for name, values in localization.items():
    ax.hist(values, bins=bins, density=True, histtype="step", linewidth=2, label=name)
ax.axvline(0.25, color="gray", linestyle=":", label="uniform energy (1/4)")
ax.set_xlabel("share of energy in the best 4 x 4 window")
ax.set_ylabel("density")
ax.legend()
ax.set_title("Atom localization")

plt.show()
