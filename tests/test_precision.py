"""precision='bfloat16': the engine's products on bfloat16 operands."""

import numpy as np
import pytest
import torch

from skae import (
    ConvSparseAutoencoder,
    JumpReLUSparseAutoencoder,
    KLSparseAutoencoder,
    KSparseAutoencoder,
    L1SparseAutoencoder,
    StackedSparseAutoencoder,
)
from skae._engine.precision import product, products_in, resolve_precision

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_auto_is_bfloat16_only_on_gpus_that_multiply_it_natively(monkeypatch):
    cuda = torch.device("cuda")
    for capability, expected in (((7, 5), None), ((8, 0), torch.bfloat16)):
        monkeypatch.setattr(
            torch.cuda, "get_device_capability", lambda d, c=capability: c
        )
        assert resolve_precision("auto", cuda) is expected
        assert resolve_precision("float32", cuda) is None
        assert resolve_precision("bfloat16", cuda) is torch.bfloat16


def test_resolve_precision_on_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("float32", cpu) is None
    assert resolve_precision("bfloat16", cpu) is torch.bfloat16


def test_product_runs_in_bfloat16_and_answers_in_the_weights_dtype():
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=rng)
    W = torch.randn(32, 16, generator=rng, requires_grad=True)
    exact = (x @ W).detach()
    with products_in(torch.bfloat16):
        low = product(torch.mm, x, W)
    assert low.dtype == torch.float32
    expected = (x.bfloat16() @ W.detach().bfloat16()).float()
    np.testing.assert_array_equal(low.detach().numpy(), expected.numpy())
    assert not torch.equal(low.detach(), exact)
    scale = exact.abs().max()
    assert float((low.detach() - exact).abs().max() / scale) < 2**-6
    # Gradients reach the float32 weight in float32, from a bfloat16 product.
    low.sum().backward()
    assert W.grad.dtype == torch.float32
    expected = x.sum(0)[:, None].expand(32, 16)
    tolerance = 2**-7 * float(x.abs().sum(0).max())
    np.testing.assert_allclose(W.grad.numpy(), expected.numpy(), atol=tolerance)
    # Outside the block, products are the operands' own again.
    assert torch.equal(product(torch.mm, x, W).detach(), exact)


def test_invalid_precision_is_rejected_before_training(sparse_data):
    with pytest.raises(ValueError, match="precision"):
        KSparseAutoencoder(precision="float16").fit(sparse_data)


def test_auto_on_the_cpu_is_bitwise_float32(sparse_data):
    params = dict(n_components=48, k=3, max_iter=3, random_state=0)
    auto = KSparseAutoencoder(**params).fit(sparse_data)
    exact = KSparseAutoencoder(precision="float32", **params).fit(sparse_data)
    np.testing.assert_array_equal(auto.components_, exact.components_)
    np.testing.assert_array_equal(
        auto.transform(sparse_data), exact.transform(sparse_data)
    )


def test_bfloat16_transform_keeps_k_and_almost_every_choice(sparse_data):
    X = sparse_data.astype(np.float32)
    sae = KSparseAutoencoder(48, k=3, max_iter=10, random_state=0).fit(X)
    exact = sae.transform(X)
    low = sae.set_params(precision="bfloat16").transform(X)
    assert low.dtype == np.float32
    assert np.all(np.count_nonzero(low, axis=1) <= 3)
    assert not np.array_equal(low, exact)
    same = (low != 0) == (exact != 0)
    assert same.all(axis=1).mean() > 0.97
    both = (low != 0) & (exact != 0)
    # bfloat16 operands and result: within a few units of 2**-8 of the value.
    relative = np.abs(low[both] - exact[both]) / np.abs(exact[both])
    assert np.median(relative) < 2**-8
    assert relative.max() < 0.05


def test_bfloat16_on_float64_data_answers_in_float64(sparse_data):
    sae = KSparseAutoencoder(48, k=3, max_iter=3, random_state=0, precision="bfloat16")
    codes = sae.fit(sparse_data).transform(sparse_data)
    assert codes.dtype == np.float64
    assert sae.inverse_transform(codes).dtype == np.float64
    # Encoded from float32 rows, as float32 data would be: no float64 copy
    # of the weights to multiply in bfloat16 anyway.
    single = sae.transform(sparse_data.astype(np.float32))
    np.testing.assert_array_equal(codes, single.astype(np.float64))


def test_bfloat16_training_keeps_float32_weights_and_adam_state(sparse_data):
    sae = KSparseAutoencoder(48, k=3, max_iter=2, random_state=0, precision="bfloat16")
    sae.fit(sparse_data)
    assert {p.dtype for p in sae.module_.parameters()} == {torch.float32}
    moments = [
        value
        for state in sae._optimizer_state["state"].values()
        for value in state.values()
        if value.ndim
    ]
    assert moments and {m.dtype for m in moments} == {torch.float32}


def _fit_both(make, X, **params):
    """The same model fitted with float32 and with bfloat16 products."""
    exact = make(precision="float32", **params).fit(X)
    low = make(precision="bfloat16", **params).fit(X)
    # Training really ran its products in bfloat16.
    assert not np.array_equal(exact.components_, low.components_)
    return exact.score(X), low.score(X)


@pytest.mark.parametrize(
    "make",
    [
        lambda **p: KSparseAutoencoder(96, k=6, **p),
        lambda **p: KSparseAutoencoder(96, k=6, k_mode="batch", **p),
        lambda **p: KSparseAutoencoder(96, k=6, encoder="mp", **p),
        lambda **p: L1SparseAutoencoder(96, alpha=0.3, **p),
        lambda **p: JumpReLUSparseAutoencoder(96, sparsity_weight=0.3, **p),
        lambda **p: KLSparseAutoencoder(96, **p),
        lambda **p: StackedSparseAutoencoder((96, 32), sparsity="topk", k=6, **p),
    ],
    ids=["topk", "batchtopk", "mp", "l1", "jumprelu", "kl", "stacked"],
)
def test_bfloat16_training_reconstructs_as_well_as_float32(patches, make):
    X = patches[:3000]
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    exact, low = _fit_both(make, X, max_iter=15, random_state=0)
    assert exact > 0.3
    # The unexplained variance rises by under 5%.
    assert 1 - low < 1.05 * (1 - exact)


def test_bfloat16_convolutional_training_reconstructs_as_well(digits):
    X = digits[0][:600].astype(np.float32)
    params = dict(
        image_shape=(8, 8),
        n_components=8,
        kernel_size=5,
        sparsity="l1",
        max_iter=10,
        random_state=0,
    )
    exact, low = _fit_both(ConvSparseAutoencoder, X, **params)
    assert exact > 0.2
    assert 1 - low < 1.05 * (1 - exact)


@needs_cuda
def test_auto_trains_in_bfloat16_on_a_gpu(sparse_data):
    X = sparse_data.astype(np.float32)
    params = dict(n_components=48, k=3, max_iter=10, random_state=0, device="cuda")
    auto = KSparseAutoencoder(**params).fit(X)
    exact = KSparseAutoencoder(precision="float32", **params).fit(X)
    assert auto.module_.W_enc.dtype == torch.float32
    assert 1 - auto.score(X) < 1.05 * (1 - exact.score(X))


@pytest.mark.parametrize("make", [KSparseAutoencoder, L1SparseAutoencoder])
def test_float64_codes_do_not_depend_on_the_other_rows_of_a_batch(sparse_data, make):
    # data.rst's promise, to float64 rounding: each row's products are the
    # same sums whichever rows share its batch, up to the order a BLAS kernel
    # adds them in (measured at most 1.1e-15 on codes of order 1).
    params = {"n_components": 64, "max_iter": 3, "random_state": 0}
    params |= {"k": 3} if make is KSparseAutoencoder else {}
    sae = make(**params).fit(sparse_data)
    codes = sae.transform(sparse_data)
    assert codes.dtype == np.float64
    alone = np.vstack([sae.transform(sparse_data[i : i + 1]) for i in range(64)])
    reversed_ = sae.transform(sparse_data[::-1])[::-1]
    among_others = sae.transform(np.vstack([sparse_data[::7], sparse_data]))
    for other in (alone, reversed_[:64], among_others[-len(sparse_data) :][:64]):
        np.testing.assert_allclose(other, codes[:64], rtol=0, atol=1e-13)
        np.testing.assert_array_equal(other != 0, codes[:64] != 0)
    # Computed in float64, not float32 and cast: those differ by about 1e-7.
    as_float32 = sae.transform(sparse_data.astype(np.float32))
    assert np.abs(as_float32[:64] - codes[:64]).max() > 1e-9
