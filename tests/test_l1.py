"""L1SparseAutoencoder: the penalty and what alpha does."""

import itertools

import numpy as np
import pytest
import torch

from skae import L1SparseAutoencoder


def fit(X, alpha, **params):
    params = {"n_components": 64, "max_iter": 40, "random_state": 0} | params
    return L1SparseAutoencoder(alpha=alpha, **params).fit(X)


def test_larger_alpha_gives_fewer_active_latents(sparse_data):
    alphas = [0.03, 0.1, 0.3, 1.0, 3.0]
    models = [fit(sparse_data, alpha) for alpha in alphas]
    l0 = [(m.transform(sparse_data) > 0).sum(axis=1).mean() for m in models]
    scores = [m.score(sparse_data) for m in models]
    assert all(a > b for a, b in itertools.pairwise(l0)), l0
    assert all(a > b for a, b in itertools.pairwise(scores)), scores
    assert l0[-1] < 0.25 * l0[0]


def test_penalty_weights_each_activation_by_its_atom_norm(sparse_data):
    sae = fit(sparse_data, 0.5, max_iter=3)
    module = sae.module_
    x = torch.as_tensor(sparse_data[:50], dtype=torch.float32)
    with torch.no_grad():
        out = module(x)
    codes, atoms = out.codes.numpy(), module.W_dec.detach().numpy()
    expected = 0.5 * (np.abs(codes) @ np.linalg.norm(atoms, axis=1)).mean()
    assert float(out.penalty) == pytest.approx(expected, rel=1e-5)
    # Atom norms are free, and the penalty sees them.
    assert not np.allclose(np.linalg.norm(sae.components_, axis=1), 1.0)


def test_codes_are_relu(sparse_data, last_epoch_activity):
    sae = fit(sparse_data, 0.3, max_iter=5, early_stopping=False)
    codes = sae.transform(sparse_data)
    assert (codes >= 0).all()
    assert (codes == 0).mean() > 0.3
    # activation_frequency_ is each latent's share of the last epoch's rows
    # with a non-zero code.
    np.testing.assert_allclose(
        sae.activation_frequency_, last_epoch_activity.frequency, atol=1e-6
    )


def test_alpha_zero_is_a_plain_relu_autoencoder(sparse_data):
    assert fit(sparse_data, 0.0).score(sparse_data) > 0.95
