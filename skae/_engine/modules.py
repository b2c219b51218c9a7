"""Autoencoder modules."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class ForwardOutput(NamedTuple):
    """What one forward pass produces."""

    reconstruction: Tensor
    codes: Tensor
    penalty: Tensor


class LinearAutoencoder(nn.Module):
    """One-layer sparse autoencoder with a tied-at-init, untied-after encoder.

    ``codes = rule.activate((x - b_dec) @ W_enc.T + b_enc)`` and
    ``reconstruction = codes @ W_dec + b_dec``. The rows of ``W_dec`` are the
    dictionary atoms (``components_`` on the estimator). The input-space bias
    ``b_dec`` starts at the data mean and the encoder at the decoder's
    transpose, as in Gao et al. (2024), "Scaling and evaluating sparse
    autoencoders".

    Parameters
    ----------
    n_features, n_components : int
        Input and code widths.
    rule : object
        A sparsity rule from :mod:`skae._sparsity`.
    mean : Tensor of shape (n_features,)
        Initial value of the input-space bias.
    generator : torch.Generator
        Source of the random initial atoms (on CPU, so that a seed gives the
        same model on every device).
    unit_norm_atoms : bool
        Keep every atom at unit L2 norm through training.
    """

    def __init__(
        self,
        n_features: int,
        n_components: int,
        rule,
        *,
        mean: Tensor,
        generator: torch.Generator,
        unit_norm_atoms: bool = True,
    ) -> None:
        super().__init__()
        self.rule = rule
        self.unit_norm_atoms = unit_norm_atoms
        atoms = torch.randn(n_components, n_features, generator=generator)
        atoms /= atoms.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec = nn.Parameter(atoms)
        self.W_enc = nn.Parameter(atoms.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_components))
        self.b_dec = nn.Parameter(mean.detach().clone().to(torch.float32))

    @property
    def n_components(self) -> int:
        return self.W_dec.shape[0]

    def preactivate(self, x: Tensor) -> Tensor:
        return torch.addmm(self.b_enc, x - self.b_dec, self.W_enc.T)

    def encode(self, x: Tensor) -> Tensor:
        return self.rule.activate(self.preactivate(x))

    def decode(self, codes: Tensor) -> Tensor:
        return torch.addmm(self.b_dec, codes, self.W_dec)

    def forward(self, x: Tensor) -> ForwardOutput:
        codes = self.encode(x)
        reconstruction = self.decode(codes)
        return ForwardOutput(
            reconstruction, codes, self.rule.penalty(codes, self.W_dec)
        )

    def activity(self, codes: Tensor) -> Tensor:
        return self.rule.activity(codes)

    @torch.no_grad()
    def before_step(self) -> None:
        """Drop the gradient component that would change the atoms' norms."""
        if self.unit_norm_atoms and self.W_dec.grad is not None:
            grad = self.W_dec.grad
            grad -= (grad * self.W_dec).sum(dim=1, keepdim=True) * self.W_dec

    @torch.no_grad()
    def after_step(self) -> None:
        """Put the atoms back on the unit sphere after the optimizer moved them."""
        if self.unit_norm_atoms:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
