"""
=================================================
Choosing the sparsity ``k`` with a grid search
=================================================

:class:`~skae.KSparseAutoencoder` is a scikit-learn estimator, so
:class:`~sklearn.model_selection.GridSearchCV` can tune its number of active
latents ``k`` like any other parameter. This example runs two searches over
``k`` on the digits: one on the autoencoder alone, scored by its own
:meth:`~skae.KSparseAutoencoder.score` (the explained variance of the
reconstruction of the held-out fold), and one on a
:class:`~sklearn.pipeline.Pipeline` that feeds the codes to a
:class:`~sklearn.linear_model.LogisticRegression`, scored by classification
accuracy. The two criteria answer different questions and need not pick the
same ``k``.
"""

# %%
# Data and search space
# ---------------------
#
# The digits are scaled to [0, 1]. The autoencoder has 64 latents and trains
# for only 20 epochs, which keeps the 30 fits of this example (2 searches × 5
# values of ``k`` × 3 folds) fast; ``k`` runs over powers of two from 2 to 32.

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

from skae import KSparseAutoencoder

X, y = load_digits(return_X_y=True)
X = X / 16

k_values = [2, 4, 8, 16, 32]
# The same three folds, stratified by digit, serve both searches.
folds = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=0).split(X, y))


def make_autoencoder():
    return KSparseAutoencoder(n_components=64, max_iter=20, random_state=0)


# %%
# Unsupervised search: the default scorer
# ---------------------------------------
#
# Without a ``scoring`` argument, ``GridSearchCV`` calls the estimator's own
# ``score`` on each held-out fold. For skae's autoencoders that is the
# explained variance of the reconstruction: 1 is perfect, 0 is no better than
# the mean image. No labels are needed, so ``y`` is not passed.

# Only the scores are used below, so neither search refits a final model.
unsupervised = GridSearchCV(make_autoencoder(), {"k": k_values}, cv=folds, refit=False)
unsupervised.fit(X)

# %%
# Supervised search: accuracy of a pipeline
# -----------------------------------------
#
# In a pipeline, the parameter is addressed as ``<step>__k``. The search fits
# the whole pipeline, autoencoder included, on every training fold, so the
# classifier is always evaluated on codes of images the autoencoder has not
# seen.

# On problems this small, the newton-cg solver converges in a few
# iterations and is faster than the default lbfgs.
pipe = Pipeline(
    [
        ("sae", make_autoencoder()),
        ("clf", LogisticRegression(solver="newton-cg", random_state=0)),
    ]
)
supervised = GridSearchCV(pipe, {"sae__k": k_values}, cv=folds, refit=False)
supervised.fit(X, y)

print(f"{'k':>3} {'explained variance':>20} {'accuracy':>16}")
for i, k in enumerate(k_values):
    ev_mean = unsupervised.cv_results_["mean_test_score"][i]
    ev_std = unsupervised.cv_results_["std_test_score"][i]
    acc_mean = supervised.cv_results_["mean_test_score"][i]
    acc_std = supervised.cv_results_["std_test_score"][i]
    print(f"{k:>3} {ev_mean:>12.3f} ± {ev_std:.3f} {acc_mean:>8.3f} ± {acc_std:.3f}")
print()
print(f"best k by explained variance: {unsupervised.best_params_['k']}")
print(f"best k by accuracy:           {supervised.best_params_['sae__k']}")

# %%
# Plot the two curves
# -------------------
#
# The error bars are the standard deviation over the three folds.

fig, (ax_ev, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5), sharex=True)
for ax, search, label in [
    (ax_ev, unsupervised, "explained variance (held-out fold)"),
    (ax_acc, supervised, "accuracy (held-out fold)"),
]:
    ax.errorbar(
        k_values,
        search.cv_results_["mean_test_score"],
        yerr=search.cv_results_["std_test_score"],
        marker="o",
        capsize=3,
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks(k_values, [str(k) for k in k_values])
    ax.set_xlabel("k (active latents per image)")
    ax.set_ylabel(label)
ax_ev.set_title("Autoencoder alone: default score")
ax_acc.set_title("Autoencoder + logistic regression")
fig.tight_layout()
plt.show()

# %%
# Reading the results
# -------------------
#
# Explained variance grows with ``k``: more active atoms reconstruct every
# image better, so the unsupervised search picks the densest code in the
# grid. It measures fidelity and does not trade it against sparsity; use it to
# compare models at the same ``k``, or to find the smallest ``k`` that reaches
# the fidelity you need. The supervised search measures what the codes are
# used for here. Its curve rises more slowly, and the table shows how much of
# the best accuracy a much sparser code keeps. When sparsity matters, pass
# ``GridSearchCV`` a callable ``refit`` that picks the smallest ``k`` whose
# score is close enough to the best, as in scikit-learn's example
# `Balance model complexity and cross-validated score
# <https://scikit-learn.org/stable/auto_examples/model_selection/plot_grid_search_refit_callable.html>`_.
