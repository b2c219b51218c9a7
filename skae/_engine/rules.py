"""Sparsity rules: how pre-activations become codes, and what sparsity costs.

A rule is a small object of settings (stored in model files as its
attributes) that the modules ask four things of, declared by :class:`Rule`:

* ``activate(pre, threshold)`` turns pre-activations into codes;
* ``penalty(codes, atoms, pre, threshold)`` is the sparsity term added to the
  reconstruction loss (zero for rules that enforce sparsity structurally);
* ``activity(codes)`` is what ``activation_frequency_`` averages: 1 where a
  latent fired, 0 elsewhere (the mean activation for smooth latents);
* ``reduce_maps(maps)`` and ``summarize_map(maps)``: what the penalty and
  the activity see of convolutional feature maps.

``threshold`` is the per-latent threshold the module learns for rules with
``learns_thresholds`` (JumpReLU), None for the others.

A new rule is a subclass here, registered with :func:`skae._engine.serialize.storable`
so model files can hold it; the estimators build it through
:mod:`skae._rules`' registry (see the developer guide).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from .serialize import storable
from .topk import topk_relu


class Rule(ABC):
    """The interface every sparsity rule gives the engine's modules."""

    #: Share of a batch's images on which a convolutional map may stay on
    #: (winner-take-all lifetime sparsity); 1 keeps every image.
    lifetime_sparsity: float = 1.0
    #: Whether the module learns a threshold per latent for this rule.
    learns_thresholds: bool = False
    #: Whether the loss has a gradient wherever the codes change, as a
    #: full-batch quasi-Newton solver needs: not where a selection or a
    #: threshold switches latents on and off by steps.
    has_gradient: bool = False
    #: Whether codes are smooth, never exactly zero, so that ``activity`` is
    #: the activation itself rather than whether a latent fired.
    smooth: bool = False

    @abstractmethod
    def activate(self, pre: Tensor, threshold: Tensor | None = None) -> Tensor:
        """The codes of pre-activations ``pre`` (rows by latents)."""

    def penalty(
        self,
        codes: Tensor,
        atoms: Tensor,
        pre: Tensor | None = None,
        threshold: Tensor | None = None,
    ) -> Tensor:
        """The sparsity term of the loss for ``codes`` and the decoder's
        ``atoms`` (one per row); none unless a rule says otherwise."""
        return codes.new_zeros(())

    def activity(self, codes: Tensor) -> Tensor:
        """1 where a latent fired, 0 elsewhere."""
        return (codes != 0).to(codes.dtype)

    def reduce_maps(self, maps: Tensor) -> Tensor:
        """Convolutional codes (images, maps, height, width) as the penalty
        sees them."""
        return maps

    def map_penalty(self, maps: Tensor, atoms: Tensor) -> Tensor:
        """The sparsity term of the loss for convolutional codes (images,
        maps, height, width) and the filters as rows of ``atoms``."""
        return self.penalty(self.reduce_maps(maps), atoms)

    def summarize_map(self, maps: Tensor) -> Tensor:
        """One value per image and map, whose :meth:`activity` is the map's."""
        return maps.amax(dim=(2, 3))

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


# ----------------------------------------------------------------- top-k


@storable
class TopK(Rule):
    """Structural k-sparsity: at most ``k`` non-zero codes per row, no penalty."""

    def __init__(self, k: int) -> None:
        self.k = k

    def activate(self, pre: Tensor, threshold: Tensor | None = None) -> Tensor:
        return topk_relu(pre, self.k)


# -------------------------------------------------------------------- L1


def weighted_l1(codes: Tensor, atoms: Tensor) -> Tensor:
    """Mean over rows of ``sum_i |h_i| * ||d_i||``.

    Weighting each activation by its atom's norm means the penalty cannot be
    dodged by shrinking codes while growing atoms (Anthropic, "Towards
    Monosemanticity", 2023).
    """
    return (codes.abs() @ atoms.norm(dim=1)).mean()


class _ReLUPenalty(Rule):
    """ReLU codes whose sparsity is a penalty of strength ``alpha``."""

    has_gradient = True

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def activate(self, pre: Tensor, threshold: Tensor | None = None) -> Tensor:
        return torch.relu(pre)


@storable
class L1(_ReLUPenalty):
    """ReLU codes with an atom-norm-weighted L1 penalty of strength ``alpha``."""

    def penalty(self, codes, atoms, pre=None, threshold=None) -> Tensor:
        return self.alpha * weighted_l1(codes, atoms)

    def reduce_maps(self, maps: Tensor) -> Tensor:
        """Per-image map totals."""
        return maps.abs().sum(dim=(2, 3))


# -------------------------------------------------------------------- L2


def weighted_l2(codes: Tensor, atoms: Tensor) -> Tensor:
    """Mean over rows of ``||(h_i * ||d_i||)_i||_2``: the norm of each row's
    activation vector, every activation weighted by its atom's norm.

    Not squared: like a group lasso over a row's latents, its gradient keeps
    its size as the codes shrink, so it drives whole rows to zero, and it
    has no preference among the latents of a row that stays active. Its
    gradient at a zero row is zero.
    """
    return torch.linalg.vector_norm(codes * atoms.norm(dim=1), dim=1).mean()


@storable
class L2(_ReLUPenalty):
    """ReLU codes with a penalty of strength ``alpha`` on the atom-norm-weighted
    L2 norm of each row's codes: it sparsifies rows, not latents."""

    def penalty(self, codes, atoms, pre=None, threshold=None) -> Tensor:
        return self.alpha * weighted_l2(codes, atoms)

    def reduce_maps(self, maps: Tensor) -> Tensor:
        """Per-image norms of each map, whose weighted norm is the norm of
        the image's whole activation."""
        return torch.linalg.vector_norm(maps, dim=(2, 3))


# ---------------------------------------------------- target activation


def rho_divergence(rho: float, rho_hat: Tensor, kind: str) -> Tensor:
    """Sum over units of s(rho, rho_hat_j): 'kl', 'l1' or 'l2' (Ng, CS294A).

    For 'kl', ``rho_hat`` is clamped to [tiny, 1 - eps] of its dtype: the
    divergence stays finite for a unit that is always off or always on, and a
    unit whose mean activation has sunk to 1e-11 is still pulled back up (a
    wider clamp would zero its gradient and leave it dead for good).
    """
    if kind == "kl":
        info = torch.finfo(rho_hat.dtype)
        q = rho_hat.clamp(info.tiny, 1 - info.eps)
        kl = rho * (math.log(rho) - torch.log(q)) + (1 - rho) * (
            math.log1p(-rho) - torch.log1p(-q)
        )
        return kl.sum()
    if kind == "l1":
        return (rho - rho_hat).abs().sum()
    if kind == "l2":
        return (rho - rho_hat).square().sum()
    raise ValueError(f"unknown divergence {kind!r}; use 'kl', 'l1' or 'l2'")


@storable
class TargetActivation(Rule):
    """Sigmoid codes whose batch-mean activations are pulled towards ``rho``."""

    has_gradient = True
    smooth = True

    def __init__(self, rho: float, weight: float, kind: str = "kl") -> None:
        self.rho = rho
        self.weight = weight
        self.kind = kind

    def activate(self, pre: Tensor, threshold: Tensor | None = None) -> Tensor:
        return torch.sigmoid(pre)

    def penalty(self, codes, atoms, pre=None, threshold=None) -> Tensor:
        return self.weight * rho_divergence(self.rho, codes.mean(dim=0), self.kind)

    def activity(self, codes: Tensor) -> Tensor:
        """The activation itself: a sigmoid unit is never exactly off."""
        return codes

    def reduce_maps(self, maps: Tensor) -> Tensor:
        """One row per position, so that rho_hat is each map's mean over
        images and positions."""
        return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])

    def map_penalty(self, maps: Tensor, atoms: Tensor) -> Tensor:
        """The penalty of each map's mean activation, once for each of its
        positions: a map stands for a dense layer's unit at every position,
        each with its own penalty (as an L1 penalty sums over positions), so
        that ``weight`` means the same for maps as for dense units. Once
        only, the penalty of a 64-position map was too weak to move it."""
        positions = maps.shape[2] * maps.shape[3]
        return positions * self.penalty(self.reduce_maps(maps), atoms)

    def summarize_map(self, maps: Tensor) -> Tensor:
        return maps.mean(dim=(2, 3))


# ------------------------------------------------------- winner-take-all


def spatial_topk(maps: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest values of each feature map of each image.

    ``maps`` has shape (n_images, n_maps, height, width); the rest become 0.
    The spatial sparsity of Makhzani & Frey (2015), "Winner-Take-All
    Autoencoders".
    """
    flat = maps.flatten(2)
    k = min(k, flat.shape[2])
    values, indices = torch.topk(flat, k, dim=2, sorted=False)
    return torch.zeros_like(flat).scatter_(2, indices, values).view_as(maps)


def lifetime_cut(maps: Tensor, rate: float) -> Tensor:
    """Per map, the strongest activation of its ``rate``-th best image of the
    batch (at least its best): lifetime sparsity keeps a map on an image
    when the map's strongest activation there reaches this cut (Makhzani &
    Frey 2015)."""
    strongest = maps.flatten(2).amax(dim=2)  # (n_images, n_maps)
    keep = min(max(1, math.ceil(rate * maps.shape[0])), maps.shape[0])
    return torch.topk(strongest, keep, dim=0).values[-1]


def apply_cut(maps: Tensor, cut: Tensor) -> Tensor:
    """Zero each map on the images where its strongest activation is below
    the map's cut."""
    strongest = maps.flatten(2).amax(dim=2)
    return maps * (strongest >= cut).to(maps.dtype)[:, :, None, None]


@storable
class WinnerTakeAll(Rule):
    """ReLU feature maps keeping the ``k`` largest values of each map of each
    image; lifetime sparsity (:func:`lifetime_cut`) is the module's."""

    def __init__(self, k: int, lifetime_sparsity: float) -> None:
        self.k = k
        self.lifetime_sparsity = lifetime_sparsity

    def activate(self, pre: Tensor, threshold: Tensor | None = None) -> Tensor:
        return spatial_topk(torch.relu(pre), self.k)


# --------------------------------------------------------- JumpReLU, L0
#
# Rajamanoharan et al. (2024), "Jumping Ahead: Improving Reconstruction
# Fidelity with JumpReLU Sparse Autoencoders", arXiv:2407.14435. A latent's
# code is its pre-activation where that exceeds the latent's threshold theta,
# else 0: JumpReLU(z) = z * H(z - theta). The loss counts the non-zero codes
# (L0), whose true gradient is zero almost everywhere, so the thresholds
# learn from pseudo-derivatives: kernel density estimates, with the rectangle
# kernel K(u) = 1[|u| <= 1/2] of width ``bandwidth``, of how the expected
# loss changes as theta moves (the paper's eqs. 11 and 12).


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel ``K(u) = 1[|u| <= 1/2]``, in ``u``'s dtype."""
    return (u.abs() <= 0.5).to(u.dtype)


def _sum_to(grad: Tensor, like: Tensor) -> Tensor:
    """``grad`` summed over the leading dimensions that ``like`` broadcast along."""
    return grad.sum_to_size(like.shape)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx, pre: Tensor, threshold: Tensor, bandwidth: float
    ) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        grad_pre = grad * (pre > threshold).to(grad.dtype)
        # d/d theta of z H(z - theta) := -(theta / eps) K((z - theta) / eps),
        # eq. 11 of Rajamanoharan et al. (2024).
        window = rectangle((pre - threshold) / bandwidth)
        grad_threshold = -(threshold / bandwidth) * window * grad
        return grad_pre, _sum_to(grad_threshold, threshold), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx, pre: Tensor, threshold: Tensor, bandwidth: float
    ) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        # d/d theta of H(z - theta) := -(1 / eps) K((z - theta) / eps), eq. 12;
        # the count passes nothing back to z (the paper's pseudo-code).
        window = rectangle((pre - threshold) / bandwidth)
        grad_threshold = -window * grad / bandwidth
        return None, _sum_to(grad_threshold, threshold), None


def jump_relu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``pre * H(pre - threshold)``, with the straight-through gradient
    ``H(pre - threshold)`` for ``pre`` and the pseudo-derivative
    ``-(threshold / bandwidth) * K((pre - threshold) / bandwidth)`` for
    ``threshold`` (broadcast along ``pre``'s rows)."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``H(pre - threshold)``, 1 where ``pre`` exceeds ``threshold``, with no
    gradient for ``pre`` and the pseudo-derivative
    ``-(1 / bandwidth) * K((pre - threshold) / bandwidth)`` for ``threshold``."""
    return _Step.apply(pre, threshold, bandwidth)


@storable
class L0(Rule):
    """JumpReLU codes counted by an L0 penalty of weight ``sparsity_weight``
    (the mean number of codes per row above their thresholds); the module's
    thresholds learn with kernels ``bandwidth`` wide."""

    learns_thresholds = True

    def __init__(self, sparsity_weight: float, bandwidth: float) -> None:
        self.sparsity_weight = sparsity_weight
        self.bandwidth = bandwidth

    def activate(self, pre: Tensor, threshold: Tensor | None = None) -> Tensor:
        return jump_relu(pre, threshold, self.bandwidth)

    def penalty(self, codes, atoms, pre=None, threshold=None) -> Tensor:
        active = step(pre, threshold, self.bandwidth)
        return self.sparsity_weight * active.sum(dim=1).mean()
