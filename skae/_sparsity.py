"""Sparsity rules: how pre-activations become codes, and what sparsity costs.

Each rule is a small object with three methods used by the engine's modules:

* ``activate(pre)`` turns pre-activations into codes;
* ``penalty(codes, atoms)`` is the sparsity term added to the reconstruction
  loss (a zero tensor for rules that enforce sparsity structurally);
* ``activity(codes)`` is what ``activation_frequency_`` averages: 1 where a
  latent fired, 0 elsewhere (the mean activation for smooth latents).

A new sparsity rule is one function here, one rule class, and one thin
estimator file.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._engine.serialize import storable


def _group_size(width: int, k: int) -> int:
    """Columns per group in :func:`largest_k` on the CPU; 1 for a plain topk.

    Groups of 8 halve ``torch.topk``'s CPU time from width 512 to 16384 and
    k from 8 to 128 (measured at 1 thread), once there are at least 4k
    groups; below that the candidates outnumber what the groups saved.
    """
    return 8 if width % 8 == 0 and width >= 32 * k else 1


def largest_k(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest entries of each row of ``pre`` and their columns,
    each (rows, k), in no particular order.

    On the CPU, two small selections replace one wide one. The columns are
    split into groups ``j, j + G, j + 2G, ...``; the ``k`` largest entries of
    a row all lie in the ``k`` groups with the largest maxima (a column of any
    other group has ``k`` group maxima at least as large), so a topk over the
    group maxima, then over those groups' columns, picks the same entries as a
    topk over the row. ``torch.topk`` spends most of its CPU time on long rows;
    these are ``G`` and ``8k`` long. The groups with the largest maxima are
    found the same way while they are many (from ``32k * 8`` columns), so
    wide rows pay for a few short selections: 18% less time at width 16384,
    k=32. Ties may be broken differently; every path of the package selects
    through this function, so they agree.
    """
    group = _group_size(pre.shape[1], k)
    if group == 1 or pre.device.type != "cpu":
        return torch.topk(pre, k, dim=1, sorted=False)
    n_rows, width = pre.shape
    n_groups = width // group
    maxima = pre.view(n_rows, group, n_groups).amax(dim=1)
    top_groups = largest_k(maxima, k)[1]
    offsets = torch.arange(0, width, n_groups, device=pre.device)
    columns = (top_groups[:, None, :] + offsets[None, :, None]).view(n_rows, -1)
    values, picked = torch.topk(pre.gather(1, columns), k, dim=1, sorted=False)
    return values, columns.gather(1, picked)


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest pre-activations of each row, ReLU them, zero the rest.

    The k-sparse autoencoder of Makhzani & Frey (2013), with the ReLU of
    Gao et al. (2024) so that kept values are never negative.
    """
    values, indices = largest_k(pre, k)
    codes = torch.zeros_like(pre)
    return codes.scatter_(1, indices, torch.relu(values))


@storable
class TopK:
    """Structural k-sparsity: at most ``k`` non-zero codes per row, no penalty."""

    def __init__(self, k: int) -> None:
        self.k = k

    def activate(self, pre: Tensor) -> Tensor:
        return topk_relu(pre, self.k)

    def penalty(self, codes: Tensor, atoms: Tensor) -> Tensor:
        return codes.new_zeros(())

    def activity(self, codes: Tensor) -> Tensor:
        return (codes != 0).to(codes.dtype)

    def __repr__(self) -> str:
        return f"TopK(k={self.k})"


def weighted_l1(codes: Tensor, atoms: Tensor) -> Tensor:
    """Mean over rows of ``sum_i |h_i| * ||d_i||``.

    Weighting each activation by its atom's norm means the penalty cannot be
    dodged by shrinking codes while growing atoms (Anthropic, "Towards
    Monosemanticity", 2023).
    """
    return (codes.abs() @ atoms.norm(dim=1)).mean()


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
    return (rho - rho_hat).square().sum()


@storable
class L1:
    """ReLU codes with an atom-norm-weighted L1 penalty of strength ``alpha``."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)

    def penalty(self, codes: Tensor, atoms: Tensor) -> Tensor:
        return self.alpha * weighted_l1(codes, atoms)

    def reduce_maps(self, maps: Tensor) -> Tensor:
        """Convolutional codes as the penalty sees them: per-image map totals."""
        return maps.abs().sum(dim=(2, 3))

    def summarize_map(self, maps: Tensor) -> Tensor:
        return maps.amax(dim=(2, 3))

    def activity(self, codes: Tensor) -> Tensor:
        return (codes != 0).to(codes.dtype)

    def __repr__(self) -> str:
        return f"L1(alpha={self.alpha})"


@storable
class TargetActivation:
    """Sigmoid codes whose batch-mean activations are pulled towards ``rho``."""

    def __init__(self, rho: float, weight: float, kind: str = "kl") -> None:
        self.rho = rho
        self.weight = weight
        self.kind = kind

    def activate(self, pre: Tensor) -> Tensor:
        return torch.sigmoid(pre)

    def penalty(self, codes: Tensor, atoms: Tensor) -> Tensor:
        return self.weight * rho_divergence(self.rho, codes.mean(dim=0), self.kind)

    def reduce_maps(self, maps: Tensor) -> Tensor:
        """Convolutional codes as the penalty sees them: one row per position,
        so rho_hat is each map's mean over images and positions."""
        return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])

    def summarize_map(self, maps: Tensor) -> Tensor:
        return maps.mean(dim=(2, 3))

    def activity(self, codes: Tensor) -> Tensor:
        return codes

    def __repr__(self) -> str:
        return f"TargetActivation(rho={self.rho}, weight={self.weight}, {self.kind!r})"


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
class WinnerTakeAll:
    """ReLU feature maps keeping the ``k`` largest values of each map of each
    image; lifetime sparsity (:func:`lifetime_cut`) is the module's."""

    def __init__(self, k: int, lifetime_sparsity: float) -> None:
        self.k = k
        self.lifetime_sparsity = lifetime_sparsity

    def activate(self, pre: Tensor) -> Tensor:
        return spatial_topk(torch.relu(pre), self.k)

    def penalty(self, codes: Tensor, atoms: Tensor) -> Tensor:
        return codes.new_zeros(())

    def reduce_maps(self, maps: Tensor) -> Tensor:
        return maps

    def summarize_map(self, maps: Tensor) -> Tensor:
        return maps.amax(dim=(2, 3))

    def activity(self, codes: Tensor) -> Tensor:
        return (codes != 0).to(codes.dtype)

    def __repr__(self) -> str:
        return f"WinnerTakeAll(k={self.k}, lifetime_sparsity={self.lifetime_sparsity})"
