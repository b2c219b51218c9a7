"""The top-k training path: sparse kernels, dead latents, input normalization."""

import numpy as np
import pytest
import torch

from skae import KSparseAutoencoder
from skae._engine.modules import LinearAutoencoder, TopKAutoencoder, tied_init
from skae._engine.rules import TopK


def twin_modules(n_features=12, width=40, k=5, input_scale=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(n_features, generator=generator)
    weights = tied_init(mean, width, generator)
    # Encoder and decoder differ, and some pre-activations are negative.
    weights = weights._replace(
        W_enc=weights.W_enc + 0.3 * torch.randn(width, n_features, generator=generator),
        b_enc=torch.randn(width, generator=generator) - 1.0,
    )
    fast = TopKAutoencoder(weights, k, input_scale=input_scale).double()
    dense = LinearAutoencoder(weights, TopK(k), input_scale=input_scale).double()
    return fast, dense


@pytest.mark.parametrize("input_scale", [1.0, 2.5])
def test_sparse_training_step_matches_the_dense_computation(input_scale):
    fast, dense = twin_modules(input_scale=input_scale)
    x = torch.randn(
        64, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    losses = []
    for module in (fast, dense):
        module.train()
        out = module(x)
        loss = (out.reconstruction - x).square().sum(dim=1).mean() + out.penalty
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    for name, parameter in fast.named_parameters():
        torch.testing.assert_close(
            parameter.grad, dict(dense.named_parameters())[name].grad
        )
    # Evaluation uses the dense path: the same codes either way.
    fast.eval()
    torch.testing.assert_close(fast.encode(x), dense.encode(x))


def test_firing_counts_match_the_dense_activity():
    fast, dense = twin_modules()
    x = torch.randn(
        64, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    fast.train()
    codes = fast(x).codes
    torch.testing.assert_close(
        fast.activity_sum(codes), dense.activity_sum(dense.encode(x))
    )


def test_the_auxiliary_loss_trains_only_dead_latents():
    fast, _ = twin_modules()
    fast.aux_k, fast.dead_after = 4, 1000
    # Seeded: with 1 draw in 200 the dead latents' pre-activations are all
    # negative, and the ReLU'd auxiliary codes rightly train none of them.
    x = torch.randn(
        64, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    fast.train()
    fast(x)  # nothing dead yet: every latent has been silent for 64 rows at most
    assert len(fast.dead_latents()) == 0
    fast.rows_since_fired[:10] = 5000  # latents 0-9 silent for long
    fast._dead = None
    fast.zero_grad()
    out = fast(x)
    live = fast.rows_since_fired < fast.dead_after
    assert out.penalty > 0
    out.penalty.backward()
    dead = fast.dead_latents()
    assert set(dead.tolist()) <= set(range(10)) and len(dead) > 0
    grad_rows = fast.W_enc.grad.abs().sum(dim=1) > 0
    assert grad_rows[dead].any()
    assert not grad_rows[live].any()


def test_without_dead_latents_the_auxiliary_loss_is_zero(sparse_data):
    fast, _ = twin_modules()
    fast.aux_k = 4
    fast.train()
    x = torch.randn(
        8, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    assert fast(x).penalty == 0


def test_aux_k_auto_is_on_for_wide_dictionaries_only(sparse_data):
    narrow = KSparseAutoencoder(64, 4, max_iter=1, random_state=0).fit(sparse_data)
    wide = KSparseAutoencoder(128, 4, max_iter=1, random_state=0).fit(sparse_data)
    assert narrow.module_.aux_k == 0  # 64 latents for 32 features
    assert wide.module_.aux_k == 16  # n_features // 2
    assert wide.n_dead_components_ == int((wide.activation_frequency_ == 0).sum())


def test_normalize_input_makes_the_fit_scale_free(sparse_data):
    X = sparse_data.astype(np.float32)
    params = {"n_components": 32, "k": 4, "max_iter": 4, "random_state": 0}
    small = KSparseAutoencoder(**params, normalize_input=True).fit(X)
    large = KSparseAutoencoder(**params, normalize_input=True).fit(1000 * X)
    np.testing.assert_allclose(small.input_scale_ / large.input_scale_, 1000, rtol=1e-5)
    mean_sq_norm = np.mean(np.sum((X * small.input_scale_) ** 2, axis=1))
    np.testing.assert_allclose(mean_sq_norm, X.shape[1], rtol=1e-4)
    np.testing.assert_allclose(small.transform(X), large.transform(1000 * X), atol=1e-3)
    np.testing.assert_allclose(
        1000 * small.inverse_transform(small.transform(X)),
        large.inverse_transform(large.transform(1000 * X)),
        rtol=1e-3,
        atol=1e-2,
    )
    assert small.score(X) == pytest.approx(large.score(1000 * X), abs=1e-4)
    plain = KSparseAutoencoder(**params).fit(X)
    assert plain.input_scale_ == 1.0


def test_copies_and_pickles_keep_the_dead_set_of_the_last_refresh():
    import pickle

    from skae._engine.device import cpu_copy

    fast, _ = twin_modules()
    fast.aux_k, fast.dead_after = 4, 1000
    fast.rows_since_fired[:10] = 5000
    x = torch.randn(
        16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4)
    )
    fast.train()
    fast(x)  # the first step refreshes the dead set
    dead = fast._dead.clone()
    assert len(dead) > 0
    fast.rows_since_fired.zero_()  # none dead now, until the next refresh
    for copy in (cpu_copy(fast), pickle.loads(pickle.dumps(fast))):
        assert torch.equal(copy._dead, dead)
        copy(x)  # step 2 of 62 between refreshes: the dead set saved
        assert torch.equal(copy._dead, dead)


def test_dead_means_an_epoch_in_fit_and_ten_million_rows_in_partial_fit(sparse_data):
    fit = KSparseAutoencoder(128, 4, max_iter=1, random_state=0).fit(sparse_data)
    assert fit.module_.dead_after == len(sparse_data)
    partial = KSparseAutoencoder(128, 4, random_state=0).partial_fit(sparse_data[:64])
    assert partial.module_.dead_after == 10_000_000


def test_warm_start_cannot_change_normalize_input(sparse_data):
    sae = KSparseAutoencoder(32, 4, max_iter=1, warm_start=True).fit(sparse_data)
    with pytest.raises(ValueError, match="normalize_input=True differs"):
        sae.set_params(normalize_input=True).fit(sparse_data)


def test_a_failed_warm_start_restores_the_module_settings(sparse_data):
    sae = KSparseAutoencoder(
        128, 2, aux_k=0, max_iter=1, warm_start=True, random_state=0
    )
    sae.fit(sparse_data)
    before = (sae.module_.rule.k, sae.module_.aux_k, sae.module_.aux_k_coef)
    sae.set_params(k=3, aux_k=8, aux_k_coef=5.0, learning_rate=1e30)
    with pytest.raises(ValueError, match="diverged"):
        sae.fit(sparse_data)
    assert (sae.module_.rule.k, sae.module_.aux_k, sae.module_.aux_k_coef) == before
