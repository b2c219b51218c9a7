"""Autoencoder modules."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn


class ForwardOutput(NamedTuple):
    """What one forward pass produces."""

    reconstruction: Tensor
    codes: Tensor
    penalty: Tensor


class Weights(NamedTuple):
    """Initial weights of a one-layer autoencoder; atoms are rows of W_dec."""

    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor


def tied_init(mean: Tensor, n_components: int, generator: torch.Generator) -> Weights:
    """Random unit atoms, encoder = decoder transpose, input bias at the mean.

    The initialization of Gao et al. (2024), "Scaling and evaluating sparse
    autoencoders". Drawn on the CPU so a seed gives the same model anywhere.
    """
    atoms = torch.randn(n_components, mean.shape[0], generator=generator)
    atoms /= atoms.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return Weights(
        atoms.clone(), torch.zeros(n_components), atoms, mean.detach().clone().float()
    )


def uniform_init(
    n_features: int, n_components: int, generator: torch.Generator, *, rho: float
) -> Weights:
    """Weights uniform in ±sqrt(6 / (n_in + n_out + 1)) as in CS294A.

    The encoder bias starts at ``logit(rho)`` rather than CS294A's 0, so that
    sigmoid units start near their target activation: from 0.5, the sparsity
    penalty would first drive every unit to a constant ``rho`` that codes
    nothing, and deep stacks rarely recover from that.
    """
    r = math.sqrt(6.0 / (n_features + n_components + 1))

    def uniform(*shape: int) -> Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1) * r

    return Weights(
        uniform(n_components, n_features),
        torch.full((n_components,), math.log(rho / (1 - rho))),
        uniform(n_components, n_features),
        torch.zeros(n_features),
    )


class LinearAutoencoder(nn.Module):
    """One-layer sparse autoencoder.

    ``codes = rule.activate((x - b_dec) @ W_enc.T + b_enc)`` (without the
    ``- b_dec`` when ``center_input`` is False) and
    ``reconstruction = output(codes @ W_dec + b_dec)``. The rows of ``W_dec``
    are the dictionary atoms (``components_`` on the estimator).

    Parameters
    ----------
    weights : Weights
        Initial weights, from :func:`tied_init` or :func:`uniform_init`.
    rule : object
        A sparsity rule from :mod:`skae._sparsity`.
    unit_norm_atoms : bool
        Keep every atom at unit L2 norm through training.
    center_input : bool
        Subtract the input-space bias before encoding (Gao et al. 2024).
    output_activation : {'identity', 'sigmoid'}
        Applied to the reconstruction; 'sigmoid' for data in (0, 1).
    weight_decay : float
        Adds ``weight_decay / 2 * (||W_enc||^2 + ||W_dec||^2)`` to the penalty.
    """

    def __init__(
        self,
        weights: Weights,
        rule,
        *,
        unit_norm_atoms: bool = True,
        center_input: bool = True,
        output_activation: str = "identity",
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.rule = rule
        self.unit_norm_atoms = unit_norm_atoms
        self.center_input = center_input
        self.output_activation = output_activation
        self.weight_decay = weight_decay
        self.W_enc = nn.Parameter(weights.W_enc.float())
        self.b_enc = nn.Parameter(weights.b_enc.float())
        self.W_dec = nn.Parameter(weights.W_dec.float())
        self.b_dec = nn.Parameter(weights.b_dec.float())

    @property
    def n_components(self) -> int:
        return self.W_dec.shape[0]

    def preactivate(self, x: Tensor) -> Tensor:
        if self.center_input:
            x = x - self.b_dec
        return torch.addmm(self.b_enc, x, self.W_enc.T)

    def encode(self, x: Tensor) -> Tensor:
        return self.rule.activate(self.preactivate(x))

    def decode(self, codes: Tensor) -> Tensor:
        reconstruction = torch.addmm(self.b_dec, codes, self.W_dec)
        if self.output_activation == "sigmoid":
            return torch.sigmoid(reconstruction)
        return reconstruction

    def sparsity_penalty(self, codes: Tensor) -> Tensor:
        return self.rule.penalty(codes, self.W_dec)

    def weight_penalty(self) -> Tensor:
        """``weight_decay / 2 * (||W_enc||^2 + ||W_dec||^2)``."""
        if not self.weight_decay:
            return self.W_dec.new_zeros(())
        squares = self.W_enc.square().sum() + self.W_dec.square().sum()
        return 0.5 * self.weight_decay * squares

    def penalty(self, codes: Tensor) -> Tensor:
        return self.sparsity_penalty(codes) + self.weight_penalty()

    def forward(self, x: Tensor) -> ForwardOutput:
        codes = self.encode(x)
        return ForwardOutput(self.decode(codes), codes, self.penalty(codes))

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


class StackedAutoencoder(nn.Module):
    """Sparse autoencoder layers stacked: encode through all, decode back.

    Layer ``i`` encodes the codes of layer ``i - 1``; decoding runs the
    layers' decoders in reverse. The penalty is the sum of every layer's
    sparsity penalty weighted by ``layer_weights``, plus every layer's weight
    penalty.
    """

    def __init__(self, layers: list[LinearAutoencoder], layer_weights: list[float]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.layer_weights = list(layer_weights)

    @property
    def n_components(self) -> int:
        return self.layers[-1].n_components

    def encode_layers(self, x: Tensor) -> list[Tensor]:
        codes = []
        for layer in self.layers:
            x = layer.encode(x)
            codes.append(x)
        return codes

    def encode(self, x: Tensor) -> Tensor:
        return self.encode_layers(x)[-1]

    def decode(self, codes: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            codes = layer.decode(codes)
        return codes

    def forward(self, x: Tensor) -> ForwardOutput:
        codes = self.encode_layers(x)
        penalty = sum(
            weight * layer.sparsity_penalty(layer_codes) + layer.weight_penalty()
            for weight, layer, layer_codes in zip(
                self.layer_weights, self.layers, codes, strict=True
            )
        )
        return ForwardOutput(self.decode(codes[-1]), codes[-1], penalty)

    def activity(self, codes: Tensor) -> Tensor:
        return self.layers[-1].activity(codes)

    def before_step(self) -> None:
        for layer in self.layers:
            layer.before_step()

    def after_step(self) -> None:
        for layer in self.layers:
            layer.after_step()


class ConvAutoencoder(nn.Module):
    """Convolutional sparse autoencoder over flattened (height, width, channels)
    images: a 'same' convolution into feature maps, a sparsity rule on the
    maps, and the transposed convolution back.

    Rows come in and go out flattened, so the module speaks the same 2-D
    language as :class:`LinearAutoencoder`; codes are the maps flattened in
    (map, row, column) order. The rule's ``activate`` is applied to the maps;
    a rule with ``train_activate`` (winner-take-all) uses it in training. L1
    and KL rules see per-image map totals and per-position activations.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        kernel_size: int,
        n_components: int,
        rule,
        *,
        mean: Tensor,
        generator: torch.Generator,
        unit_norm_atoms: bool,
    ) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.rule = rule
        self.unit_norm_atoms = unit_norm_atoms
        height, width, channels = image_shape
        filters = torch.randn(
            n_components, channels, kernel_size, kernel_size, generator=generator
        )
        filters /= filters.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
        self.W_enc = nn.Parameter(filters.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_components))
        self.W_dec = nn.Parameter(filters)
        channel_mean = mean.float().view(height, width, channels).mean(dim=(0, 1))
        self.b_dec = nn.Parameter(channel_mean)

    @property
    def n_components(self) -> int:
        return self.W_dec.shape[0]

    @property
    def padding(self) -> int:
        return self.W_dec.shape[-1] // 2

    def _images(self, x: Tensor) -> Tensor:
        height, width, channels = self.image_shape
        return x.view(-1, height, width, channels).permute(0, 3, 1, 2)

    def maps(self, x: Tensor) -> Tensor:
        """Sparse feature maps, shape (n_images, n_components, height, width)."""
        images = self._images(x) - self.b_dec[None, :, None, None]
        pre = nn.functional.conv2d(images, self.W_enc, self.b_enc, padding=self.padding)
        if self.training and hasattr(self.rule, "train_activate"):
            return self.rule.train_activate(pre)
        return self.rule.activate(pre)

    def encode(self, x: Tensor) -> Tensor:
        return self.maps(x).flatten(1)

    def pooled(self, x: Tensor, pool_size: int) -> Tensor:
        maps = self.maps(x)
        return nn.functional.max_pool2d(maps, pool_size, ceil_mode=True).flatten(1)

    def decode(self, codes: Tensor) -> Tensor:
        height, width, _ = self.image_shape
        maps = codes.view(-1, self.n_components, height, width)
        images = nn.functional.conv_transpose2d(maps, self.W_dec, padding=self.padding)
        images = images + self.b_dec[None, :, None, None]
        return images.permute(0, 2, 3, 1).flatten(1)

    def penalty(self, maps: Tensor) -> Tensor:
        atoms = self.W_dec.flatten(1)
        if hasattr(self.rule, "alpha"):  # L1: per-image totals of each map
            return self.rule.penalty(maps.abs().sum(dim=(2, 3)), atoms)
        if hasattr(self.rule, "rho"):  # KL: mean over images and positions
            per_position = maps.permute(0, 2, 3, 1).reshape(-1, self.n_components)
            return self.rule.penalty(per_position, atoms)
        return self.rule.penalty(maps, atoms)

    def forward(self, x: Tensor) -> ForwardOutput:
        maps = self.maps(x)
        codes = maps.flatten(1)
        return ForwardOutput(self.decode(codes), codes, self.penalty(maps))

    def activity(self, codes: Tensor) -> Tensor:
        """Per image and map: fired anywhere (ReLU rules) or mean activation."""
        height, width, _ = self.image_shape
        maps = codes.view(-1, self.n_components, height * width)
        if hasattr(self.rule, "rho"):
            return maps.mean(dim=2)
        return (maps != 0).any(dim=2).to(codes.dtype)

    @torch.no_grad()
    def before_step(self) -> None:
        if self.unit_norm_atoms and self.W_dec.grad is not None:
            atoms, grad = self.W_dec.flatten(1), self.W_dec.grad.flatten(1)
            grad -= (grad * atoms).sum(dim=1, keepdim=True) * atoms

    @torch.no_grad()
    def after_step(self) -> None:
        if self.unit_norm_atoms:
            norms = self.W_dec.flatten(1).norm(dim=1).clamp_min(1e-12)
            self.W_dec /= norms[:, None, None, None]
