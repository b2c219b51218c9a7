import warnings

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from skae import (
    ConvSparseAutoencoder,
    L1SparseAutoencoder,
    L2SparseAutoencoder,
    StackedSparseAutoencoder,
)
from skae._engine.rules import L2, weighted_l2


@pytest.fixture(scope="module")
def background_and_events():
    """Rows of faint noise (three in four) and rows that are sums of three
    of eight atoms: data where whole rows should be explained by the mean."""
    rng = np.random.RandomState(0)
    atoms = rng.randn(8, 16)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    background = 0.05 * rng.randn(450, 16)
    weights = np.zeros((150, 8))
    for row in weights:
        row[rng.choice(8, 3, replace=False)] = rng.uniform(1, 3, 3)
    events = weights @ atoms + 0.05 * rng.randn(150, 16)
    is_event = np.r_[np.zeros(450, bool), np.ones(150, bool)]
    return np.vstack([background, events]), is_event


def fitted(cls, X, alpha):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 60 epochs: not the point here
        return cls(32, alpha=alpha, max_iter=60, random_state=0).fit(X)


def weighted_norms(sae, X):
    codes = sae.transform(X)
    return np.linalg.norm(codes * np.linalg.norm(sae.components_, axis=1), axis=1)


def test_penalty_is_the_atom_weighted_norm_of_each_row():
    rng = np.random.RandomState(0)
    codes, atoms = rng.rand(5, 3), rng.randn(3, 4)
    expected = np.mean(np.linalg.norm(codes * np.linalg.norm(atoms, axis=1), axis=1))
    got = weighted_l2(torch.from_numpy(codes), torch.from_numpy(atoms))
    assert float(got) == pytest.approx(expected, rel=1e-12)
    assert float(L2(0.5).penalty(torch.from_numpy(codes), torch.from_numpy(atoms))) == (
        pytest.approx(0.5 * expected, rel=1e-12)
    )


def test_a_zero_row_passes_a_zero_gradient():
    codes = torch.zeros(2, 3, requires_grad=True)
    L2(1.0).penalty(codes, torch.ones(3, 4)).backward()
    assert torch.equal(codes.grad, torch.zeros(2, 3))


def test_the_penalty_drives_the_mean_activation_norm_down(background_and_events):
    X, _ = background_and_events
    norms = [
        weighted_norms(fitted(L2SparseAutoencoder, X, a), X).mean() for a in (0.3, 1, 3)
    ]
    assert norms[0] > 1.2 * norms[1] and norms[1] > 1.2 * norms[2], norms


def test_it_sparsifies_samples_where_l1_sparsifies_latents(background_and_events):
    X, is_event = background_and_events
    l2 = fitted(L2SparseAutoencoder, X, 1.0)
    l1 = fitted(L1SparseAutoencoder, X, 1.0)
    l2_codes, l1_codes = l2.transform(X), l1.transform(X)
    silent = (l2_codes == 0).all(axis=1)
    # Whole background rows fall silent; no event does.
    assert silent[~is_event].mean() > 0.5
    assert silent[is_event].mean() < 0.05
    # L1 silences about as many background rows...
    l1_silent = (l1_codes == 0).all(axis=1)
    assert abs(l1_silent[~is_event].mean() - silent[~is_event].mean()) < 0.15
    # ...but by cutting latents: the rows L2 keeps use more of them, and
    # reconstruct better.
    l2_latents = (l2_codes[~silent] != 0).sum(axis=1).mean()
    l1_latents = (l1_codes[~l1_silent] != 0).sum(axis=1).mean()
    assert l2_latents > 1.5 * l1_latents, (l2_latents, l1_latents)
    assert l2.score(X) > l1.score(X) + 0.05


def test_stacked_penalty_is_the_weighted_sum_of_layer_norms(digits):
    X = StandardScaler().fit_transform(digits[0])
    sae = StackedSparseAutoencoder(
        (16, 8),
        sparsity="l2",
        alpha=(0.3, 1.0),
        layer_weights=(1.0, 3.0),
        weight_decay=0,
        max_iter=2,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae.fit(X)
    module = sae.module_
    x = torch.as_tensor(X[:50], dtype=torch.float32)
    with torch.no_grad():
        h1 = module.layers[0].encode(x)
        h2 = module.layers[1].encode(h1)
        expected = 1.0 * 0.3 * weighted_l2(h1, module.layers[0].W_dec) + (
            3.0 * 1.0 * weighted_l2(h2, module.layers[1].W_dec)
        )
        assert float(module(x).penalty) == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) > 0


def test_conv_penalty_is_the_norm_of_each_images_whole_activation(digits):
    X, _ = digits
    sae = ConvSparseAutoencoder(
        (8, 8),
        n_components=4,
        kernel_size=3,
        sparsity="l2",
        alpha=0.7,
        max_iter=2,
        random_state=0,
    ).fit(X[:200] / 16)
    module = sae.module_
    x = torch.as_tensor(X[:20] / 16, dtype=torch.float32)
    with torch.no_grad():
        maps = module.maps(x)  # (images, maps, 8, 8)
        atom_norms = module.W_dec.flatten(1).norm(dim=1)
        weighted = maps * atom_norms[None, :, None, None]
        expected = 0.7 * weighted.flatten(1).norm(dim=1).mean()
        assert float(module(x).penalty) == pytest.approx(float(expected), rel=1e-5)
