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

import torch
from torch import Tensor


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest pre-activations of each row, ReLU them, zero the rest.

    The k-sparse autoencoder of Makhzani & Frey (2013), with the ReLU of
    Gao et al. (2024) so that kept values are never negative.
    """
    values, indices = torch.topk(pre, k, dim=1, sorted=False)
    codes = torch.zeros_like(pre)
    return codes.scatter_(1, indices, torch.relu(values))


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
