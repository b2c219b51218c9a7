"""JumpReLU codes with a learned threshold per latent and an L0 penalty.

Rajamanoharan et al. (2024), "Jumping Ahead: Improving Reconstruction Fidelity
with JumpReLU Sparse Autoencoders", arXiv:2407.14435. A latent's code is its
pre-activation where that exceeds the latent's threshold ``theta``, else 0:
``JumpReLU(z) = z * H(z - theta)``. The loss counts the non-zero codes (L0),
whose true gradient is zero almost everywhere, so the thresholds learn from
*pseudo-derivatives*: kernel density estimates, with the rectangle kernel
``K(u) = 1[|u| <= 1/2]`` of width ``bandwidth``, of how the expected loss
changes as ``theta`` moves (the paper's eqs. 11 and 12).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from .modules import ForwardOutput, LinearAutoencoder, Weights
from .serialize import storable


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
class L0:
    """JumpReLU codes counted by an L0 penalty of weight ``sparsity_weight``;
    the thresholds learn with kernels ``bandwidth`` wide.

    The codes and the penalty need the module's thresholds, so
    :class:`JumpReLUAutoencoder` computes them; the rule holds the settings
    and says which codes are active.
    """

    def __init__(self, sparsity_weight: float, bandwidth: float) -> None:
        self.sparsity_weight = sparsity_weight
        self.bandwidth = bandwidth

    def activity(self, codes: Tensor) -> Tensor:
        return (codes != 0).to(codes.dtype)

    def __repr__(self) -> str:
        return f"L0(sparsity_weight={self.sparsity_weight}, bandwidth={self.bandwidth})"


class JumpReLUAutoencoder(LinearAutoencoder):
    """One-layer JumpReLU autoencoder with a learned threshold per latent.

    ``codes = JumpReLU(pre)`` with ``pre = (x - b_dec) @ W_enc.T + b_enc`` and
    ``theta = exp(log_threshold)``, which keeps every threshold positive.
    The penalty is ``sparsity_weight`` times the mean number of codes per
    row above their thresholds. Atoms stay at unit norm, so a threshold is
    the smallest magnitude an atom may have in a reconstruction; an L0
    penalty does not reward shrinking codes, so the norm constraint costs
    nothing.
    """

    def __init__(self, weights: Weights, rule: L0, *, initial_threshold: float):
        super().__init__(weights, rule, unit_norm_atoms=True)
        log_threshold = torch.full((self.n_components,), math.log(initial_threshold))
        self.log_threshold = nn.Parameter(log_threshold)

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def encode(self, x: Tensor) -> Tensor:
        return jump_relu(self.preactivate(x), self.threshold, self.rule.bandwidth)

    def l0_penalty(self, pre: Tensor, threshold: Tensor) -> Tensor:
        """``sparsity_weight`` times the mean over rows of the active count."""
        active = step(pre, threshold, self.rule.bandwidth)
        return self.rule.sparsity_weight * active.sum(dim=1).mean()

    def forward(self, x: Tensor) -> ForwardOutput:
        pre = self.preactivate(x)
        threshold = self.threshold
        codes = jump_relu(pre, threshold, self.rule.bandwidth)
        penalty = self.l0_penalty(pre, threshold) + self.weight_penalty()
        return ForwardOutput(self.decode(codes), codes, penalty)
