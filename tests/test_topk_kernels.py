"""Sparse top-k kernels: same codes and gradients as the dense path."""

import pytest
import torch

from skae._engine import topk as topk_module
from skae._engine.topk import (
    _group_size,
    largest_k,
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


@pytest.mark.parametrize(
    ("width", "k", "dtype"),
    [
        (256, 8, torch.float32),
        (4096, 32, torch.float32),
        (512, 16, torch.float64),
        # Groups of groups: 16384 / 8 = 2048 maxima, themselves grouped.
        (16384, 32, torch.float32),
        # Three levels: 65536 / 8 / 8 = 1024 maxima of maxima, grouped again.
        (65536, 4, torch.float32),
    ],
)
def test_grouped_selection_matches_topk(width, k, dtype):
    assert _group_size(width, k) > 1  # the grouped path is the one under test
    pre = torch.randn(300, width, generator=torch.Generator().manual_seed(0))
    pre = pre.to(dtype)
    values, indices = largest_k(pre, k)
    expected = torch.topk(pre, k, dim=1)
    assert torch.equal(values.sort(dim=1).values, expected.values.sort(dim=1).values)
    assert torch.equal(indices.sort(dim=1).values, expected.indices.sort(dim=1).values)
    assert torch.equal(pre.gather(1, indices), values)


@pytest.mark.parametrize("width", [256, 4096])  # one level of groups, two
def test_grouped_selection_with_ties_keeps_k_largest(width):
    # Integer pre-activations tie everywhere: any tie-break is a right answer
    # as long as k distinct columns holding the k largest values come back.
    generator = torch.Generator().manual_seed(1)
    pre = torch.randint(0, 5, (200, width), generator=generator).float()
    values, indices = largest_k(pre, 8)
    expected = torch.topk(pre, 8, dim=1).values
    assert torch.equal(values.sort(dim=1).values, expected.sort(dim=1).values)
    assert torch.equal(pre.gather(1, indices), values)
    assert all(len(set(row.tolist())) == 8 for row in indices)


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


# Rows that break selections: every value equal, all negative, a few huge
# values among tiny ones, float extremes, and ties at the k-th place.
ADVERSARIAL_ROWS = {
    "all equal": lambda g, w: torch.full((w,), 0.5),
    "all negative": lambda g, w: -torch.rand(w, generator=g) - 1,
    "huge among tiny": lambda g, w: (
        torch.randn(w, generator=g) * 1e-30 + (torch.rand(w, generator=g) < 0.01) * 1e30
    ),
    "float extremes": lambda g, w: torch.tensor([3.3e38, -3.3e38, 1e-38, -1e-38, 0.0])[
        torch.randint(0, 5, (w,), generator=g)
    ],
    "ties at the k-th place": lambda g, w: torch.randint(
        0, 3, (w,), generator=g
    ).float(),
    "one spike": lambda g, w: torch.zeros(w).index_fill_(
        0, torch.randint(0, w, (1,), generator=g), 1.0
    ),
}


def kept_set_matches_topk(pre, k):
    """The selection keeps k distinct columns whose values are the k
    largest, as torch.topk's are (ties may pick other columns)."""
    values, indices = largest_k(pre, k)
    expected = torch.topk(pre, k, dim=1).values
    assert torch.equal(values.sort(dim=1).values, expected.sort(dim=1).values)
    assert torch.equal(pre.gather(1, indices), values)
    assert all(len(set(row.tolist())) == k for row in indices)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("width", [256, 4096, 32768])
def test_selection_keeps_the_k_largest_on_adversarial_rows(width, dtype):
    generator = torch.Generator().manual_seed(width)
    rows = [make(generator, width) for make in ADVERSARIAL_ROWS.values()]
    pre = torch.stack([*rows, *(torch.randn(16, width, generator=generator))])
    pre = pre.to(dtype)
    assert torch.isfinite(pre).all()
    for k in (1, 8, 32):
        kept_set_matches_topk(pre, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selection_matches_topk_on_drawn_rows(dtype):
    """Property: on any finite rows of any width and k, the same kept set."""
    from hypothesis import given
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    @given(
        st.integers(1, 40).flatmap(
            lambda k: st.tuples(
                st.just(k),
                st.sampled_from([32, 64, 256, 1024])
                .filter(lambda w: w >= k)
                .flatmap(
                    lambda w: arrays(
                        "float32",
                        (3, w),
                        elements=st.one_of(
                            st.floats(-1e6, 1e6, width=32),
                            st.sampled_from([0.0, 1.0, -1.0]),
                        ),
                    )
                ),
            )
        )
    )
    def check(case):
        k, rows = case
        kept_set_matches_topk(torch.from_numpy(rows).to(dtype), k)

    check()


def test_the_cpu_selects_in_groups_never_over_a_whole_row(monkeypatch):
    """On the CPU, no torch.topk runs over a row as long as the width: the
    grouped selection is the one that runs, and it is the fast one."""
    lengths = []
    original = torch.topk

    def topk(input, *args, **kwargs):
        lengths.append(input.shape[-1])
        return original(input, *args, **kwargs)

    monkeypatch.setattr(torch, "topk", topk)
    pre = torch.randn(64, 4096, generator=torch.Generator().manual_seed(0))
    largest_k(pre, 32)
    assert lengths and max(lengths) <= 4096 // 8  # the group maxima


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
