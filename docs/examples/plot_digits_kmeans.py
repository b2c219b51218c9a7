"""
===========================================================
Clustering digits with k-sparse autoencoder features
===========================================================

This example puts a :class:`~skae.KSparseAutoencoder` in front of
:class:`~sklearn.cluster.KMeans` in a :class:`~sklearn.pipeline.Pipeline` and
clusters the 8 × 8 handwritten digits of
:func:`~sklearn.datasets.load_digits`. The sparse codes are compared with
:class:`~sklearn.decomposition.PCA` components and with the raw pixels, by the
adjusted Rand index (ARI) of the clusters against the true digits, and by the
held-out accuracy of a :class:`~sklearn.linear_model.LogisticRegression`
trained on each representation. Finally we look at the learned dictionary
atoms and decode the cluster centres back into images.
"""

# %%
# Load the data
# -------------
#
# The pixels are gray levels from 0 to 16; dividing by 16 puts them in
# [0, 1]. Clustering is unsupervised and uses every image; the classifier is trained
# on three quarters of the images and tested on the rest.

import matplotlib.pyplot as plt
import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skae import KSparseAutoencoder
from skae.plotting import DictionaryDisplay

X, y = load_digits(return_X_y=True)
X = X / 16
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, stratify=y, random_state=0
)

# %%
# Three representations
# ---------------------
#
# Each representation is a transformer, so the same code builds every
# pipeline. The autoencoder has 128 latents, twice as many as there are
# pixels, and codes each image with at most ``k=16`` of them; PCA keeps 16
# dense components, the same number of non-zeros per image. A
# ``FunctionTransformer`` that does nothing stands for the raw pixels. The
# autoencoder trains for only 30 epochs to keep the example fast.


def make_representations():
    return {
        "raw pixels": FunctionTransformer(),
        "PCA(16)": PCA(n_components=16, random_state=0),
        "KSparse(128, k=16)": KSparseAutoencoder(
            n_components=128, k=16, max_iter=30, random_state=0
        ),
    }


rows = {}
pipelines = {}
for name, representation in make_representations().items():
    pipe = make_pipeline(
        representation, KMeans(n_clusters=10, n_init=10, random_state=0)
    )
    clusters = pipe.fit_predict(X)
    pipelines[name] = pipe
    rows[name] = {"ARI": adjusted_rand_score(y, clusters)}

# On problems this small, the newton-cg solver converges in a few
# iterations and is faster than the default lbfgs.
for name, representation in make_representations().items():
    classifier = make_pipeline(
        representation, LogisticRegression(solver="newton-cg", random_state=0)
    )
    classifier.fit(X_train, y_train)
    rows[name]["accuracy"] = classifier.score(X_test, y_test)

sae = pipelines["KSparse(128, k=16)"][0]
print(f"autoencoder explained variance: {sae.score(X):.3f}")
print(f"largest number of active latents: {(sae.transform(X) != 0).sum(1).max()}")
print()
print(f"{'representation':<20} {'KMeans ARI':>10} {'test accuracy':>14}")
for name, row in rows.items():
    print(f"{name:<20} {row['ARI']:>10.3f} {row['accuracy']:>14.3f}")

# %%
# On digits, all three representations give clusters of similar quality and
# similarly accurate linear classifiers: the table shows how close they are on
# this run. Digits are small and nearly linear to separate, so a sparse code
# has little room to improve on the pixels. What it adds is that each image is
# built from at most 16 of 128 atoms, which the rest of this example shows.

names = list(rows)
positions = np.arange(len(names))
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.bar(positions - 0.2, [rows[n]["ARI"] for n in names], 0.4, label="KMeans ARI")
ax.bar(
    positions + 0.2,
    [rows[n]["accuracy"] for n in names],
    0.4,
    label="logistic regression accuracy",
)
ax.set_xticks(positions, names)
ax.set_ylim(0, 1)
ax.legend(loc="lower right")
ax.set_title("Digits: clustering and classification")
fig.tight_layout()

# %%
# The dictionary
# --------------
#
# Every latent has an atom, a row of ``components_`` with unit norm, that it
# adds to the reconstruction when it is active. Below, the 64 most frequently
# used atoms are drawn as 8 × 8 images (red positive, blue negative) next to
# PCA's 16 components. PCA's components are global patterns ordered by
# explained variance, and every image uses all of them; each autoencoder atom
# is a signed pixel pattern that only some of the images use. Learned from
# 1797 small images in 30 epochs, the atoms are noisy and harder to read than
# the reconstructions they add up to.

pca = pipelines["PCA(16)"][0]
fig, (ax_sae, ax_pca) = plt.subplots(1, 2, figsize=(9, 4.5))
DictionaryDisplay.from_estimator(sae, image_shape=(8, 8), n_atoms=64, ax=ax_sae)
ax_sae.set_title("KSparse: 64 most used of 128 atoms")
DictionaryDisplay(pca.components_, image_shape=(8, 8)).plot(ax=ax_pca)
ax_pca.set_title("PCA: 16 components")
fig.tight_layout()

# %%
# Cluster centres as images
# -------------------------
#
# The KMeans centres live in the 128-dimensional code space. Since the
# decoder is linear, :meth:`~skae.KSparseAutoencoder.inverse_transform` maps
# each centre back to the average image of its cluster. Above each image is
# the digit most frequent in its cluster.

kmeans = pipelines["KSparse(128, k=16)"][-1]
centres = sae.inverse_transform(kmeans.cluster_centers_)
fig, axes = plt.subplots(1, 10, figsize=(10, 1.6))
for label, (ax, centre) in enumerate(zip(axes, centres, strict=True)):
    majority = np.bincount(y[kmeans.labels_ == label], minlength=10).argmax()
    ax.imshow(centre.reshape(8, 8), cmap="gray_r", interpolation="nearest")
    ax.set_title(str(majority))
    ax.set_axis_off()
fig.suptitle("Decoded KMeans centres, titled by their majority digit")
fig.tight_layout()

plt.show()
