"""Sparse top-k kernels: same codes and gradients as the dense path."""

import pytest
import torch

from skae._engine import topk as topk_module
from skae._engine.topk import (
    latent_counts,
    sparse_decode,
    topk_encode,
    topk_relu,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ),
]


def dense_codes(values, indices, width):
    """The (batch, width) codes that ``values`` at ``indices`` stand for."""
    return values.new_zeros(values.shape[0], width).scatter(1, indices, values)


def make_weights(
    n_samples=20, n_features=6, width=12, *, shift=0.0, device="cpu", seed=0
):
    """Float64 inputs and weights; a negative ``shift`` of the encoder bias
    puts negative pre-activations among the top k."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    tensors = {
        "x": randn(n_samples, n_features),
        "W_enc": randn(width, n_features),
        "b_enc": randn(width) + shift,
        "W_dec": randn(width, n_features),
        "b_dec": randn(n_features),
    }
    return {name: t.to(device).requires_grad_() for name, t in tensors.items()}


def dense_reconstruction(x, W_enc, b_enc, W_dec, b_dec, k):
    codes = topk_relu(torch.addmm(b_enc, x - b_dec, W_enc.T), k)
    return torch.addmm(b_dec, codes, W_dec)


def sparse_reconstruction(x, W_enc, b_enc, W_dec, b_dec, k):
    values, indices = topk_encode(x - b_dec, W_enc, b_enc, k)
    return sparse_decode(values, indices, W_dec, b_dec)


def gradients(reconstruct, weights, k):
    """Gradients of a squared error with respect to every input that has one."""
    reconstruction = reconstruct(**weights, k=k)
    loss = (reconstruction - weights["x"].detach().flip(0)).square().sum()
    wanted = [t for t in weights.values() if t.requires_grad]
    return torch.autograd.grad(loss, wanted)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [1, 4, 12])
def test_codes_match_topk_relu(device, k):
    w = make_weights(shift=-1.0, device=device)
    x, W_enc, b_enc = w["x"], w["W_enc"], w["b_enc"]
    values, indices = topk_encode(x, W_enc, b_enc, k)
    assert values.shape == indices.shape == (x.shape[0], k)
    expected = topk_relu(torch.addmm(b_enc, x, W_enc.T), k)
    assert torch.equal(dense_codes(values, indices, W_enc.shape[0]), expected)


def test_chunked_encoding_matches_one_product(monkeypatch):
    w = make_weights(n_samples=50, n_features=6, width=64)
    k = 4

    def encode_and_grad():
        values, indices = topk_encode(w["x"], w["W_enc"], w["b_enc"], k)
        grads = torch.autograd.grad(values.square().sum(), [w["W_enc"], w["x"]])
        return values, indices, grads

    whole = encode_and_grad()
    monkeypatch.setattr(topk_module, "CHUNK_ELEMENTS", 64 * 7)  # 7-row chunks
    chunked = encode_and_grad()
    # The same latents; values to the last bits a GEMM's blocking may move.
    assert torch.equal(whole[1], chunked[1])
    torch.testing.assert_close(whole[0], chunked[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(whole[2], chunked[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_encoding_is_deterministic():
    w = make_weights(n_samples=50, width=64)
    first = topk_encode(w["x"], w["W_enc"], w["b_enc"], 5)
    second = topk_encode(w["x"], w["W_enc"], w["b_enc"], 5)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shift", [0.0, -1.5])
def test_gradients_match_dense_path(device, shift):
    w = make_weights(shift=shift, device=device)
    k = 5
    if shift:  # the ReLU must have clipped some kept latents
        values, _ = topk_encode(w["x"] - w["b_dec"], w["W_enc"], w["b_enc"], k)
        assert (values == 0).any() and (values > 0).any()
    expected = gradients(dense_reconstruction, w, k)
    got = gradients(sparse_reconstruction, w, k)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_input_without_grad(device):
    w = make_weights(device=device)
    w["x"].requires_grad_(False)
    expected = gradients(dense_reconstruction, w, 3)
    got = gradients(sparse_reconstruction, w, 3)
    assert len(got) == 4
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_encoder_without_weight_grads():
    w = make_weights()
    values, _ = topk_encode(w["x"], w["W_enc"].detach(), w["b_enc"].detach(), 3)
    (grad_x,) = torch.autograd.grad(values.sum(), w["x"])
    assert grad_x.shape == w["x"].shape


def test_decoder_gradient_is_dense():
    w = make_weights()
    values, indices = topk_encode(w["x"], w["W_enc"], w["b_enc"], 3)
    sparse_decode(values, indices, w["W_dec"], w["b_dec"]).sum().backward()
    assert w["W_dec"].grad.layout == torch.strided
    assert w["W_enc"].grad.layout == torch.strided


def test_the_decoder_weights_get_their_gradient_from_one_sparse_product(
    monkeypatch,
):
    """On the CPU, W_dec's gradient is the sparse product over the kept
    latents, not embedding_bag's own backward (slower there): one product
    per decode that needs it, none where W_dec takes no gradient."""
    products, original = [], torch.sparse.mm

    def counted(*args):
        products.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(torch.sparse, "mm", counted)
    w = make_weights()
    values, indices = topk_encode(w["x"].detach(), w["W_enc"].detach(), w["b_enc"], 3)
    sparse_decode(values, indices, w["W_dec"], w["b_dec"]).sum().backward()
    assert products == [w["W_dec"].shape[:1] + w["x"].shape[:1]]
    products.clear()
    values = values.detach().requires_grad_()
    sparse_decode(values, indices, w["W_dec"].detach(), w["b_dec"]).sum().backward()
    assert products == [] and values.grad is not None
    with torch.no_grad():
        decoded = sparse_decode(values, indices, w["W_dec"], w["b_dec"])
    assert decoded.grad_fn is None


def test_decoder_gradient_through_a_subset_of_atoms():
    """As the auxiliary loss decodes with the dead latents' atoms only
    (``W_dec[dead]``): the gradient reaches those rows of W_dec alone, as
    the dense product of the codes gives it."""
    w = make_weights(width=12)
    dead = torch.tensor([1, 4, 5, 9])
    values, indices = topk_encode(w["x"], w["W_enc"][dead], w["b_enc"][dead], 2)
    target = w["x"].detach().flip(0)
    loss = (sparse_decode(values, indices, w["W_dec"][dead], 0) - target).square()
    got = torch.autograd.grad(loss.sum(), w["W_dec"])[0]
    codes = dense_codes(values.detach(), indices, len(dead))
    dense = (codes @ w["W_dec"][dead] - target).square()
    expected = torch.autograd.grad(dense.sum(), w["W_dec"])[0]
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    untouched = torch.ones(12, dtype=torch.bool).index_fill_(0, dead, False)
    assert (got[untouched] == 0).all() and (got[dead] != 0).any()


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_encode(device):
    w = make_weights(n_samples=6, n_features=4, width=9, shift=-0.5, device=device)

    def encode(x, W_enc, b_enc):
        return topk_encode(x, W_enc, b_enc, 4)[0]

    assert torch.autograd.gradcheck(encode, (w["x"], w["W_enc"], w["b_enc"]))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_decode(device):
    w = make_weights(n_samples=6, n_features=4, width=9, device=device)
    values, indices = topk_encode(w["x"], w["W_enc"], w["b_enc"], 4)
    values = values.detach().requires_grad_()

    def decode(values, W_dec, b_dec):
        return sparse_decode(values, indices, W_dec, b_dec)

    assert torch.autograd.gradcheck(decode, (values, w["W_dec"], w["b_dec"]))


@pytest.mark.parametrize("device", DEVICES)
def test_latent_counts_count_positive_codes(device):
    w = make_weights(n_samples=40, shift=-1.0, device=device)
    width = w["W_enc"].shape[0]
    values, indices = topk_encode(w["x"], w["W_enc"], w["b_enc"], 4)
    counts = latent_counts(values, indices, width)
    expected = (dense_codes(values, indices, width) > 0).sum(dim=0)
    assert counts.dtype == torch.int64
    assert torch.equal(counts, expected)
    assert counts.sum() < values.numel()  # some kept latents were clipped


def test_omp_with_more_picks_than_dimensions_stays_finite_and_exact():
    # Three unit atoms in the plane and k=3: the third pick is already in
    # the span of the first two and adds no direction; it must not add a
    # NaN either, and the fit stays exact.
    atoms = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)).double()
    codes, picked = topk_module.orthogonal_matching_pursuit(x, atoms, 3)
    assert torch.isfinite(codes).all()
    reconstruction = (codes.unsqueeze(2) * atoms[picked]).sum(dim=1)
    torch.testing.assert_close(reconstruction, x, rtol=0, atol=1e-5)


def test_the_cpu_encodes_a_chunk_of_rows_at_a_time_into_one_buffer(monkeypatch):
    """Wide products run a chunk of rows at a time on the CPU, each written
    into the same buffer of CHUNK_ELEMENTS pre-activations, and every row's
    codes are those of one product over all rows."""
    rows = topk_module.CHUNK_ELEMENTS // 4096
    w = make_weights(n_samples=2 * rows + 188, n_features=6, width=4096)
    products, original = [], torch.addmm

    def addmm(*args, **kwargs):
        out = original(*args, **kwargs)
        products.append((tuple(out.shape), out.data_ptr(), "out" in kwargs))
        return out

    monkeypatch.setattr(torch, "addmm", addmm)
    with torch.no_grad():
        _, indices = topk_encode(w["x"], w["W_enc"], w["b_enc"], 8)
    assert [shape for shape, _, _ in products] == [
        (rows, 4096),
        (rows, 4096),
        (188, 4096),
    ]
    assert len({pointer for _, pointer, _ in products}) == 1
    assert all(into for _, _, into in products)
    monkeypatch.setattr(torch, "addmm", original)
    expected = torch.topk(w["x"] @ w["W_enc"].T + w["b_enc"], 8, dim=1)
    assert torch.equal(indices.sort(dim=1).values, expected.indices.sort(dim=1).values)
