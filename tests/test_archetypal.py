import warnings

import numpy as np
import pytest
import torch

from skae import KSparseAutoencoder, L1SparseAutoencoder, L2SparseAutoencoder
from skae.datasets import make_image_patches
from skae.inspect import dictionary_recovery


@pytest.fixture(scope="module")
def patches():
    return make_image_patches(3000, random_state=0)


def fit(make, X, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short fits: not the point here
        return make(**params).fit(X)


def ksparse(**params):
    return KSparseAutoencoder(64, k=4, dictionary="archetypal", max_iter=10, **params)


def assert_in_relaxed_hull(sae, relaxation):
    module = sae.module_
    weights = module.archetype_weights.detach().double()
    offsets = module.archetype_offsets.detach().double()
    archetypes = module.archetypes.double()
    assert weights.min() >= 0
    np.testing.assert_allclose(weights.sum(dim=1), 1, atol=1e-6)
    assert offsets.norm(dim=1).max() <= relaxation * (1 + 1e-6)
    atoms = (weights @ archetypes + offsets).numpy()
    np.testing.assert_allclose(sae.components_, atoms, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        ksparse,
        lambda **p: L1SparseAutoencoder(
            32, alpha=0.3, dictionary="archetypal", max_iter=5, **p
        ),
        lambda **p: L2SparseAutoencoder(32, dictionary="archetypal", max_iter=5, **p),
    ],
    ids=["ksparse", "l1", "l2"],
)
def test_atoms_stay_in_the_relaxed_hull_of_data_rows(patches, make):
    sae = fit(make, patches, relaxation=0.05, random_state=0)
    assert_in_relaxed_hull(sae, 0.05)
    # The archetypes are training rows spread evenly through the data,
    # centred, and scaled to an RMS norm of 1.
    archetypes = sae.module_.archetypes.numpy()
    n_archetypes = len(archetypes)
    spread = np.linspace(0, len(patches) - 1, n_archetypes).round().astype(int)
    rows = (patches - patches.mean(axis=0))[spread]
    rows /= np.sqrt((rows**2).sum(axis=1).mean())
    np.testing.assert_allclose(archetypes, rows, atol=1e-4)
    assert n_archetypes == 4 * sae.n_components
    # Training on keeps them there.
    sae.partial_fit(patches)
    assert_in_relaxed_hull(sae, 0.05)


def test_archetypes_are_the_same_rows_whatever_the_seed(patches):
    one, two = (fit(ksparse, patches, random_state=s) for s in (0, 1))
    assert torch.equal(one.module_.archetypes, two.module_.archetypes)
    assert not np.allclose(one.components_, two.components_)


def test_archetypal_dictionaries_vary_less_across_seeds(patches):
    def stability(**params):
        a, b = (
            fit(
                KSparseAutoencoder,
                patches,
                n_components=64,
                k=4,
                max_iter=10,
                random_state=s,
                **params,
            ).components_
            for s in (0, 1)
        )
        return dictionary_recovery(a, b).mean_best_cosine

    free, archetypal = stability(), stability(dictionary="archetypal")
    assert archetypal > free + 0.15, (archetypal, free)


def test_truncation_keeps_the_hull(patches):
    sae = fit(ksparse, patches, random_state=0)
    small = sae.truncate(16)
    assert small.module_.archetypal
    assert_in_relaxed_hull(small, sae.relaxation)
    np.testing.assert_array_equal(small.components_, sae.components_[:16])


def test_warm_start_cannot_change_the_dictionary(patches):
    sae = fit(ksparse, patches, random_state=0, warm_start=True)
    with pytest.raises(ValueError, match="dictionary='free' differs"):
        sae.set_params(dictionary="free").fit(patches)
