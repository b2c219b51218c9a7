"""Selection kernels: top-k encoding and decoding that touch only the kept
latents, and matching pursuit.

A top-k autoencoder keeps ``k`` of ``width`` latents per row, yet the dense
path (:func:`topk_relu` then ``codes @ W_dec``) spends its backward on
(batch, width) matrix products that are almost all zeros. Here only the
encoder's forward is dense; the rest works on (batch, k) values and indices,
after the fused encoder of EleutherAI's sparsify. Every selection of the
package goes through :func:`largest_k`, so that all paths break ties alike.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from functools import cache
from itertools import pairwise
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import product, product_dtype


def _group_size(width: int, k: int) -> int:
    """Columns per group in :func:`_grouped_largest_k`; 1 for a plain topk.

    Grouping pays once there are many more groups than ``k`` (the candidates
    it leaves are ``8k``); ``benchmarks/run.py --only kernels`` measures
    where, and other group sizes.
    """
    return 8 if width % 8 == 0 and width >= 32 * k else 1


def _compiled_group_size(width: int, k: int) -> int:
    """Columns per strided group of the compiled selection: the largest power
    of two up to 32 that leaves ``8k`` groups or more (``benchmarks/run.py
    --only kernels`` measures the others)."""
    size = 1
    while size < 32 and width // (2 * size) >= 8 * k:
        size *= 2
    return size


def largest_k(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest entries of each row of ``pre`` and their columns,
    each (rows, k), in no particular order.

    On the CPU, float32 and bfloat16 rows go to the compiled selection of
    :mod:`skae._engine.compiled`, which reads each row once and then only a
    few candidates; other dtypes to :func:`_grouped_largest_k`, and a GPU to
    ``torch.topk``. All keep the same set of entries as ``torch.topk``, a
    NaN ranked above every number, though ties may be broken differently.
    """
    if pre.device.type != "cpu":
        return torch.topk(pre, k, dim=1, sorted=False)
    # The kernel writes k entries a row unchecked: it needs 0 < k < width.
    if pre.dtype in (torch.float32, torch.bfloat16) and 0 < k < pre.shape[1]:
        compiled = _compiled_kernels(pre.dtype)
        if compiled is not None:
            return _compiled_largest_k(compiled, pre, k)
    return _grouped_largest_k(pre, k)


def _grouped_largest_k(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """:func:`largest_k` with torch's operators: two small selections replace
    one wide one.

    The columns are split into groups ``j, j + G, j + 2G, ...``; the ``k``
    largest entries of a row all lie in the ``k`` groups with the largest
    maxima (a column of any other group has ``k`` group maxima at least as
    large), so a topk over the group maxima, then over those groups'
    columns, picks the same entries as a topk over the row. ``torch.topk``
    spends most of its CPU time on long rows; these are ``G`` and ``8k``
    long, and the group maxima are selected from the same way while they are
    many.
    """
    group = _group_size(pre.shape[1], k)
    if group == 1:
        return torch.topk(pre, k, dim=1, sorted=False)
    n_rows, width = pre.shape
    n_groups = width // group
    maxima = pre.view(n_rows, group, n_groups).amax(dim=1)
    top_groups = _grouped_largest_k(maxima, k)[1]
    offsets = torch.arange(0, width, n_groups, device=pre.device)
    columns = (top_groups[:, None, :] + offsets[None, :, None]).view(n_rows, -1)
    values, picked = torch.topk(pre.gather(1, columns), k, dim=1, sorted=False)
    return values, columns.gather(1, picked)


@cache
def _compiled_kernels(dtype: torch.dtype):
    """:mod:`skae._engine.compiled`, imported on first use (numba takes a
    moment to load) and its kernel for ``dtype`` compiled and checked
    against ``torch.topk`` on a few rows; or None, with a warning, where numba
    cannot load, compile or cache it, so that torch's operators select."""
    try:
        from . import compiled

        # Distinct integers, exact in bfloat16 too: one right answer.
        generator = torch.Generator().manual_seed(0)
        rows = torch.stack([torch.randperm(256, generator=generator) for _ in range(4)])
        rows = (rows - 128).to(dtype)
        values, indices = _compiled_largest_k(compiled, rows, 5)
        expected = torch.topk(rows, 5, dim=1)
        kept = indices.sort(dim=1).values
        if not (
            torch.equal(kept, expected.indices.sort(dim=1).values)
            and torch.equal(rows.gather(1, indices), values)
        ):
            raise RuntimeError("it kept other entries than torch.topk")
    # Whatever the failure (no numba, a release that cannot compile the
    # kernel, no folder for its cache), torch's selection stands in.
    except Exception as error:
        warnings.warn(
            f"skae's compiled top-k selection is unavailable for {dtype} "
            f"({type(error).__name__}: {error}); selecting with torch's "
            "operators instead, which keep the same entries more slowly. Where "
            "numba cannot write its cache, set NUMBA_CACHE_DIR to a writable "
            "folder.",
            UserWarning,
            stacklevel=4,
        )
        return None
    return compiled


#: Rows below which a share of the compiled selection is not worth a thread.
ROWS_PER_THREAD = 64
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _threads() -> ThreadPoolExecutor:
    """This process's pool of selection threads (a forked child makes its own)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        workers = max(1, (os.cpu_count() or 1) - 1)
        _pool = (os.getpid(), ThreadPoolExecutor(workers, "skae-select"))
    return _pool[1]


def _share_rows(kernel: Callable, args: tuple, n_rows: int) -> None:
    """``kernel(*args, start, stop)`` over ``range(n_rows)`` in contiguous
    shares, one per torch thread, the caller's thread taking the first: the
    kernel releases the GIL, so the shares run at once."""
    n_threads = max(1, min(torch.get_num_threads(), n_rows // ROWS_PER_THREAD))
    bounds = [n_rows * i // n_threads for i in range(n_threads + 1)]
    pool = _threads() if n_threads > 1 else None
    futures = [
        pool.submit(kernel, *args, start, stop) for start, stop in pairwise(bounds[1:])
    ]
    try:
        kernel(*args, bounds[0], bounds[1])
    finally:
        wait_for(futures)  # they write into the caller's arrays
    for future in futures:
        future.result()  # raises what a share raised


def _compiled_largest_k(compiled, pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """:func:`largest_k` through the compiled selection, its rows shared
    among torch's threads; rows that hold a NaN go to ``torch.topk``."""
    rows = pre.detach().contiguous()
    n_rows, width = rows.shape
    values = rows.new_empty(n_rows, k)
    indices = torch.empty(n_rows, k, dtype=torch.long)
    has_nan = torch.empty(n_rows, dtype=torch.bool)
    # bfloat16 crosses to numba, which has no such type, as its bits.
    as_numpy = (
        (lambda t: t.view(torch.int16).numpy())
        if rows.dtype == torch.bfloat16
        else (lambda t: t.numpy())
    )
    arrays = (as_numpy(rows), _compiled_group_size(width, k), k, as_numpy(values))
    _share_rows(
        compiled.select_rows, (*arrays, indices.numpy(), has_nan.numpy()), n_rows
    )
    if has_nan.any():
        nan_rows = has_nan.nonzero().squeeze(1)
        values[nan_rows], indices[nan_rows] = torch.topk(
            rows[nan_rows], k, dim=1, sorted=False
        )
    if pre.requires_grad and torch.is_grad_enabled():
        values = pre.gather(1, indices)
    return values, indices


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest pre-activations of each row, ReLU them, zero the rest.

    The k-sparse autoencoder of Makhzani & Frey (2013), with the ReLU of
    Gao et al. (2024) so that kept values are never negative.
    """
    values, indices = largest_k(pre, k)
    codes = torch.zeros_like(pre)
    return codes.scatter_(1, indices, torch.relu(values))


def _weight_grad(grad_values: Tensor, x: Tensor, indices: Tensor, width: int) -> Tensor:
    """``G.T @ x``, G being (batch, width) with ``grad_values`` at ``indices``."""
    n_rows, k = indices.shape
    rows = torch.arange(n_rows, device=indices.device).repeat_interleave(k)
    # A sparse product rather than sparsify's index_add_ of the (batch * k,
    # n_features) outer products: it needs no memory for them, and stays
    # fast on the CPU once they outgrow the cache.
    G_T = torch.sparse_coo_tensor(
        torch.stack([indices.flatten(), rows]),
        grad_values.flatten(),
        (width, n_rows),
        check_invariants=False,  # topk's indices are in range by construction
    )
    return torch.sparse.mm(G_T, x)


#: Pre-activations per chunk of :func:`_encode_chunks` on the CPU (16 MiB
#: in float32): chunks of fewer rows slow the product more than they speed
#: the selection, most at large widths (``benchmarks/run.py --only kernels``).
CHUNK_ELEMENTS = 2**22


def _encode_chunks(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """:func:`largest_k` of ``x @ W_enc.T + b_enc``, a chunk of rows at a time
    on the CPU, the product in the product dtype; values in ``x``'s dtype.

    Only (batch, k) results outlive a chunk: the (chunk, width)
    pre-activations are written into one buffer instead of a fresh (batch,
    width) matrix per step, whose allocation and first touch of every page
    cost as much as the selection. The GPU gets one product, which it runs
    best.
    """
    n_rows, width = x.shape[0], W_enc.shape[0]
    rows = max(1, CHUNK_ELEMENTS // width)
    # The selection reads the product's dtype: no pass to cast it back.
    dtype = product_dtype(x)
    x_low, W_low, b_low = (t.to(dtype) for t in (x, W_enc, b_enc))
    if x.device.type != "cpu" or n_rows <= rows:
        values, indices = largest_k(torch.addmm(b_low, x_low, W_low.T), k)
        return values.to(x.dtype), indices
    values = x.new_empty(n_rows, k)
    indices = torch.empty(n_rows, k, dtype=torch.long)
    buffer = x_low.new_empty(rows, width)
    for start in range(0, n_rows, rows):
        stop = min(start + rows, n_rows)
        pre = torch.addmm(b_low, x_low[start:stop], W_low.T, out=buffer[: stop - start])
        values[start:stop], indices[start:stop] = largest_k(pre, k)
    return values, indices


class _TopKEncode(torch.autograd.Function):
    """``relu(topk(x @ W_enc.T + b_enc))`` with a backward over kept latents only."""

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int):
        values, indices = _encode_chunks(x, W_enc, b_enc, k)
        values = torch.relu(values)
        ctx.save_for_backward(x, W_enc, values, indices)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values: Tensor, grad_indices: Tensor):
        x, W_enc, values, indices = ctx.saved_tensors
        # ReLU: a kept latent that was clipped to 0 passes no gradient back.
        grad_values = grad_values.masked_fill(values <= 0, 0)
        grad_x = grad_W_enc = grad_b_enc = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(
                indices, W_enc, mode="sum", per_sample_weights=grad_values
            )
        if ctx.needs_input_grad[1]:
            grad_W_enc = _weight_grad(grad_values, x, indices, W_enc.shape[0])
        if ctx.needs_input_grad[2]:
            grad_b_enc = grad_values.new_zeros(W_enc.shape[0])
            grad_b_enc.index_add_(0, indices.flatten(), grad_values.flatten())
        return grad_x, grad_W_enc, grad_b_enc, None


def topk_encode(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """The ReLU'd ``k`` largest entries of ``x @ W_enc.T + b_enc`` per row and
    their columns, each (batch, k); gradients flow through the values only."""
    return _TopKEncode.apply(x, W_enc, b_enc, k)


class _DecoderGrad(torch.autograd.Function):
    """The identity on a decoded batch, through which ``W_dec`` gets its
    gradient over the kept latents as one sparse product."""

    @staticmethod
    def forward(ctx, decoded: Tensor, W_dec: Tensor, values: Tensor, indices: Tensor):
        ctx.save_for_backward(values, indices)
        ctx.width = W_dec.shape[0]
        return decoded.view_as(decoded)

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, indices = ctx.saved_tensors
        grad_W_dec = None
        if ctx.needs_input_grad[1]:
            grad_W_dec = _weight_grad(values, grad, indices, ctx.width)
        return grad, grad_W_dec, None, None


def sparse_decode(
    values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Tensor
) -> Tensor:
    """``b_dec + sum_j values[:, j] * W_dec[indices[:, j]]``, row by row.

    ``W_dec`` gets a dense gradient, as Adam and the unit-norm projection of
    :meth:`LinearAutoencoder.before_step` need. On the CPU it is the sparse
    product of :func:`_weight_grad`, which runs faster there than
    embedding_bag's own backward (``benchmarks/run.py --only kernels``);
    embedding_bag gives the values theirs.
    """
    sparse_grad = (
        W_dec.device.type == "cpu" and W_dec.requires_grad and torch.is_grad_enabled()
    )
    weights = W_dec.detach() if sparse_grad else W_dec
    decoded = F.embedding_bag(indices, weights, mode="sum", per_sample_weights=values)
    if sparse_grad:
        decoded = _DecoderGrad.apply(decoded, W_dec, values.detach(), indices)
    return decoded + b_dec


def latent_counts(values: Tensor, indices: Tensor, width: int) -> Tensor:
    """How many rows fire each latent, a non-zero value at one of its
    ``indices`` (int64, length ``width``). A latent that a row lists twice
    counts twice: top-k never lists one twice, matching pursuit may."""
    fired = (values != 0).flatten().long()
    # index_add_ rather than bincount(indices[values > 0]): no boolean mask, so
    # no host sync on the GPU.
    return fired.new_zeros(width).index_add_(0, indices.flatten(), fired)


def matching_pursuit(residual: Tensor, atoms: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``k`` greedy steps of matching pursuit over unit-norm ``atoms``.

    Each step picks, for every row, the atom whose correlation with what is
    left of the row is largest in absolute value, takes that correlation as
    its code, and subtracts the atom's share (Mallat & Zhang 1993; the MP-SAE
    encoder of Costa et al. 2025). Codes are signed, so an atom serves both
    polarities of its pattern. Returns the codes and atom indices of the
    steps, each (rows, k); an atom may be picked twice, and its codes then
    add up. The choice of atoms is a constant for autograd; gradients reach
    ``residual`` and ``atoms`` through the codes, over the picked atoms only.
    """
    values, indices = [], []
    for _ in range(k):
        with torch.no_grad():
            picked = product(torch.mm, residual, atoms.T).abs_().argmax(dim=1)
        # index_select: its backward is faster than indexing's.
        atom = atoms.index_select(0, picked)
        code = (residual * atom).sum(dim=1)
        residual = residual - code[:, None] * atom
        values.append(code)
        indices.append(picked)
    return torch.stack(values, dim=1), torch.stack(indices, dim=1)


def orthogonal_matching_pursuit(
    x: Tensor, atoms: Tensor, k: int, ridge: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """``k`` steps of orthogonal matching pursuit over unit-norm ``atoms``.

    As :func:`matching_pursuit`, but what is left of a row after each pick
    is orthogonal to every atom picked so far (Pati et al. 1993), kept so by
    Gram-Schmidt against an orthonormal basis of the picks. The codes are
    the least-squares fit of the row by its picks, with ``ridge`` on the
    diagonal of their Gram matrix so that a degenerate pick cannot make it
    singular. The picks are a constant for autograd; gradients reach ``x``
    and ``atoms`` through that fit. A row costs about ``k**2`` products of
    its length for the picks, and one (k x k) solve.
    """
    with torch.no_grad():
        weights = atoms.detach()
        residual, picks, basis = x.detach(), [], []
        for _ in range(k):
            picked = product(torch.mm, residual, weights.T).abs_().argmax(dim=1)
            picks.append(picked)
            direction = weights.index_select(0, picked)
            for unit in basis:
                direction = direction - (direction * unit).sum(1, keepdim=True) * unit
            norm = direction.norm(dim=1, keepdim=True)
            # An atom already in the span adds no direction (norm ~ 0).
            unit = direction / norm.clamp_min(1e-6) * (norm > 1e-6)
            basis.append(unit)
            residual = residual - (residual * unit).sum(1, keepdim=True) * unit
        picked = torch.stack(picks, dim=1)
    # (rows, k, features); index_select's backward is the fastest gather.
    chosen = atoms.index_select(0, picked.flatten()).view(*picked.shape, -1)
    eye = ridge * torch.eye(k, dtype=x.dtype, device=x.device)
    gram = chosen @ chosen.transpose(1, 2) + eye
    codes = torch.linalg.solve(gram, chosen @ x.unsqueeze(2)).squeeze(2)
    return codes, picked


def batch_keep(values: Tensor, k: int) -> Tensor:
    """Mask of the ``k * rows`` largest of the (rows, c) ``values`` of a
    batch (BatchTopK, Bussmann et al. 2024): rows keep more or fewer than
    ``k`` as their values rank against the whole batch's."""
    flat = values.detach().flatten()
    n_kept = min(k * values.shape[0], flat.numel())
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, n_kept, sorted=False).indices] = True
    return keep.view_as(values)


# -------------------------------------------------------------- selection


class SparseCodes(NamedTuple):
    """Top-k codes as the values and latent indices of each row's kept latents."""

    values: Tensor
    indices: Tensor

    def detach(self) -> SparseCodes:
        return SparseCodes(self.values.detach(), self.indices)


class Selection:
    """How a top-k module chooses each row's latents, in training and after.

    A selection reads the module's weights (and, for BatchTopK, its
    ``threshold`` buffer) and gives each row's kept latents as
    :class:`SparseCodes`. ``centered`` rows are scaled, with the input bias
    taken away.
    """

    #: Whether a row may list a latent twice (its codes then add up).
    repeats = False
    #: Whether codes come from the encoder's weights, so that the auxiliary
    #: loss can train dead latents.
    uses_encoder = True
    #: Whether :meth:`kept_codes` gives every row's codes (else rows keep a
    #: varying number, and :meth:`dense_codes` encodes).
    keeps_k = True

    def train_codes(self, module, centered: Tensor) -> SparseCodes:
        """The training codes of ``centered`` rows."""
        raise NotImplementedError

    def kept_codes(self, module, centered: Tensor) -> SparseCodes:
        """Inference's codes, ``k`` a row (some may be zero), selected as in
        training."""
        return self.train_codes(module, centered)

    def dense_codes(self, module, x: Tensor) -> Tensor:
        """Inference's codes of raw rows ``x``, for a selection that does
        not keep ``k`` a row."""
        raise NotImplementedError


class RowTopK(Selection):
    """The ``k`` largest pre-activations of each row."""

    def train_codes(self, module, centered: Tensor) -> SparseCodes:
        return SparseCodes(*topk_encode(centered, module.W_enc, module.b_enc, module.k))


class BatchTopK(Selection):
    """BatchTopK (Bussmann et al. 2024): in training, the ``k * batch``
    largest of the batch's pre-activations, so that a row uses more or fewer
    than ``k`` latents (at most ``factor * k``, the candidates each row
    offers). The module's ``threshold`` buffer follows the smallest kept
    activation, averaged over steps with ``momentum``; inference keeps, row
    by row, every pre-activation above it."""

    keeps_k = False
    factor = 4
    momentum = 0.05

    def train_codes(self, module, centered: Tensor) -> SparseCodes:
        width = min(self.factor * module.k, module.n_components)
        values, indices = topk_encode(centered, module.W_enc, module.b_enc, width)
        keep = batch_keep(values, module.k)
        self.follow(module.threshold, values.detach(), keep)
        return SparseCodes(values * keep, indices)

    @torch.no_grad()
    def follow(self, threshold: Tensor, values: Tensor, keep: Tensor) -> None:
        """Move ``threshold`` towards the batch's smallest kept activation,
        without a host sync."""
        smallest = torch.where(keep & (values > 0), values, math.inf).min()
        moved = torch.where(
            torch.isnan(threshold), smallest, threshold.lerp(smallest, self.momentum)
        )
        threshold.copy_(torch.where(torch.isinf(smallest), threshold, moved))

    def kept_codes(self, module, centered: Tensor) -> SparseCodes:
        raise NotImplementedError("BatchTopK rows keep a varying number")

    def dense_codes(self, module, x: Tensor) -> Tensor:
        pre = module.preactivate(x)
        if torch.isnan(module.threshold):  # never trained in batch mode
            return module.rule.activate(pre)
        return torch.where(pre > module.threshold, pre, 0).relu_()


class Pursuit(Selection):
    """``k`` steps of a matching pursuit over the decoder's unit atoms, with
    signed codes; the encoder's weights are unused."""

    repeats = True
    uses_encoder = False

    def __init__(self, pursue: Callable[..., tuple[Tensor, Tensor]]) -> None:
        self.pursue = pursue

    def train_codes(self, module, centered: Tensor) -> SparseCodes:
        return SparseCodes(*self.pursue(centered, module.W_dec, module.k))


#: The selections by the estimator's name for them: ``k_mode`` for the
#: linear encoder, else ``encoder``.
SELECTIONS = {
    "row": RowTopK(),
    "batch": BatchTopK(),
    "mp": Pursuit(matching_pursuit),
    "omp": Pursuit(orthogonal_matching_pursuit),
}


def selection(encoder: str, k_mode: str) -> Selection:
    """The selection of a top-k module with this ``encoder`` and ``k_mode``."""
    return SELECTIONS[k_mode if encoder == "linear" else encoder]
