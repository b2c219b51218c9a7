"""Autoencoder modules, and the interface the estimators rely on."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .precision import product
from .rules import Rule, TopK, apply_cut, lifetime_cut
from .topk import (
    Selection,
    SparseCodes,
    latent_counts,
    selection,
    sparse_decode,
    topk_encode,
)


class ForwardOutput(NamedTuple):
    """What one forward pass produces: the codes are dense, or each row's
    kept latents in top-k training."""

    reconstruction: Tensor
    codes: Tensor | SparseCodes
    penalty: Tensor


class Weights(NamedTuple):
    """Initial weights of a one-layer autoencoder; atoms are rows of W_dec."""

    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor


class Autoencoder(nn.Module):
    """What the estimators and the training loop use of a module.

    ``forward`` gives the reconstruction, the codes and the penalty the loss
    adds; ``encode`` and ``decode`` are inference's; ``activity_sum`` and
    ``measure`` gather ``activation_frequency_``; ``before_step`` and
    ``after_step`` run around every optimizer step (for constraints on the
    weights); ``atoms`` are the dictionary in input space, one per latent.
    """

    #: Whether :meth:`decode_sparse` decodes CSR codes reading only the
    #: stored codes' atoms.
    decodes_sparse = False

    @property
    def n_components(self) -> int:
        raise NotImplementedError

    @property
    def smooth_codes(self) -> bool:
        """Whether the codes are never exactly zero (the rule's ``smooth``),
        so that ``activity_sum`` sums activations, not firings."""
        return self.rule.smooth

    @property
    def trains_as_it_infers(self) -> bool:
        """Whether a training step's codes are those :meth:`encode` gives
        with the same weights (not so for a selection or cut that depends on
        the batch), so that what training saw describes the model."""
        return self.rule.lifetime_sparsity >= 1.0

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def encode_into(self, x: Tensor, out: Tensor) -> None:
        """Write :meth:`encode`'s codes of ``x`` into ``out``, a tensor of
        zeros of their shape and dtype."""
        out.copy_(self.encode(x))

    def decode(self, codes: Tensor) -> Tensor:
        raise NotImplementedError

    def decode_sparse(self, values: Tensor, indices: Tensor, offsets: Tensor) -> Tensor:
        """:meth:`decode` of codes in CSR form: row ``i`` holds
        ``values[offsets[i]:offsets[i + 1]]`` at columns ``indices[...]``
        (``offsets`` without its last entry)."""
        raise NotImplementedError

    def activity_sum(self, codes: Tensor) -> Tensor:
        """Every latent's activity summed over the rows of ``codes``."""
        raise NotImplementedError

    def measure(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Every latent's activity summed over the rows of ``x``, and the
        squared reconstruction error of all of them, in float64."""
        codes = self.encode(x)
        error = (self.decode(codes) - x).square().sum(dtype=torch.float64)
        return self.activity_sum(codes), error

    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def atoms(self) -> Tensor:
        """The dictionary atoms in input space, one row per latent."""
        return self.W_dec

    def before_step(self) -> None:
        """Called after the backward pass, before the optimizer's step."""

    def after_step(self) -> None:
        """Called after the optimizer's step."""


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


class LinearAutoencoder(Autoencoder):
    """One-layer sparse autoencoder.

    ``codes = rule.activate((x - b_dec) @ W_enc.T + b_enc)`` (without the
    ``- b_dec`` when ``center_input`` is False) and
    ``reconstruction = output(codes @ W_dec + b_dec)``. The rows of ``W_dec``
    are the dictionary atoms (``components_`` on the estimator).

    Parameters
    ----------
    weights : Weights
        Initial weights, from :func:`tied_init` or :func:`uniform_init`.
    rule : Rule
        A sparsity rule from :mod:`skae._engine.rules`.
    unit_norm_atoms : bool
        Keep every atom at unit L2 norm through training.
    center_input : bool
        Subtract the input-space bias before encoding (Gao et al. 2024).
    output_activation : {'identity', 'sigmoid'}
        Applied to the reconstruction; 'sigmoid' for data in (0, 1).
    weight_decay : float
        Adds ``weight_decay / 2 * (||W_enc||^2 + ||W_dec||^2)`` to the penalty.
    input_scale : float
        The module works on ``x * input_scale`` and reconstructs in the
        input's own units (``normalize_input``); 1 leaves ``x`` as it is.
    initial_threshold : float, optional
        For a rule that learns thresholds, every latent's first threshold;
        the module learns their logarithms (``log_threshold``), which keeps
        them positive.
    """

    decodes_sparse = True

    def __init__(
        self,
        weights: Weights,
        rule: Rule,
        *,
        unit_norm_atoms: bool = True,
        center_input: bool = True,
        output_activation: str = "identity",
        weight_decay: float = 0.0,
        input_scale: float = 1.0,
        initial_threshold: float | None = None,
    ) -> None:
        super().__init__()
        self.rule = rule
        self.input_scale = float(input_scale)
        self.unit_norm_atoms = unit_norm_atoms
        self.center_input = center_input
        self.output_activation = output_activation
        self.weight_decay = weight_decay
        self.W_enc = nn.Parameter(weights.W_enc.float())
        self.b_enc = nn.Parameter(weights.b_enc.float())
        self.W_dec = nn.Parameter(weights.W_dec.float())
        self.b_dec = nn.Parameter(weights.b_dec.float())
        if rule.learns_thresholds:
            first = math.log(initial_threshold)
            self.log_threshold = nn.Parameter(torch.full((self.n_components,), first))

    @property
    def n_components(self) -> int:
        return self.W_dec.shape[0]

    @property
    def W_dec(self) -> Tensor:
        """The dictionary, one atom per row: a parameter, or for an archetypal
        dictionary ``archetype_weights @ archetypes + archetype_offsets``."""
        free = self._parameters.get("W_dec")
        if free is not None:
            return free
        if "archetype_weights" not in self._parameters:
            raise AttributeError("W_dec")  # not built yet
        return torch.addmm(
            self.archetype_offsets, self.archetype_weights, self.archetypes
        )

    @property
    def archetypal(self) -> bool:
        """Whether the atoms are held in a relaxed convex hull of data rows."""
        return "archetype_weights" in self._parameters

    def make_archetypal(
        self, archetypes: Tensor, radius: float, weights: Tensor, offsets: Tensor
    ) -> None:
        """Hold the atoms in the relaxed convex hull of ``archetypes`` (rows
        of centred data): atom ``i`` is ``weights[i] @ archetypes +
        offsets[i]``, with ``weights[i]`` on the simplex (non-negative,
        summing to 1) and ``||offsets[i]|| <= radius``, both learned and
        projected back after every step (Fel et al. 2025, "Archetypal SAE",
        their relaxed RA-SAE). The atoms' norms are then free."""
        del self._parameters["W_dec"]
        self.archetype_weights = nn.Parameter(weights.float())
        self.archetype_offsets = nn.Parameter(offsets.float())
        self.register_buffer("archetypes", archetypes.float())
        self.radius = float(radius)
        self.unit_norm_atoms = False

    @property
    def latent_threshold(self) -> Tensor | None:
        """Every latent's learned threshold, or None for a rule without."""
        return self.log_threshold.exp() if self.rule.learns_thresholds else None

    def scaled(self, x: Tensor) -> Tensor:
        return x if self.input_scale == 1.0 else x * self.input_scale

    def unscaled(self, x: Tensor) -> Tensor:
        return x if self.input_scale == 1.0 else x / self.input_scale

    def preactivate(self, x: Tensor) -> Tensor:
        x = self.scaled(x)
        if self.center_input:
            x = x - self.b_dec
        return product(torch.addmm, self.b_enc, x, self.W_enc.T)

    def encode(self, x: Tensor) -> Tensor:
        return self.rule.activate(self.preactivate(x), self.latent_threshold)

    def encode_with_penalty(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The codes of ``x`` and their sparsity penalty."""
        pre = self.preactivate(x)
        threshold = self.latent_threshold
        codes = self.rule.activate(pre, threshold)
        return codes, self.rule.penalty(codes, self.W_dec, pre, threshold)

    def decode(self, codes: Tensor) -> Tensor:
        reconstruction = product(torch.addmm, self.b_dec, codes, self.W_dec)
        return self._output(reconstruction)

    def decode_sparse(self, values: Tensor, indices: Tensor, offsets: Tensor) -> Tensor:
        reconstruction = nn.functional.embedding_bag(
            indices, self.W_dec, offsets, mode="sum", per_sample_weights=values
        )
        return self._output(reconstruction + self.b_dec)

    def _output(self, reconstruction: Tensor) -> Tensor:
        if self.output_activation == "sigmoid":
            reconstruction = torch.sigmoid(reconstruction)
        return self.unscaled(reconstruction)

    def weight_penalty(self) -> Tensor:
        """``weight_decay / 2 * (||W_enc||^2 + ||W_dec||^2)``."""
        if not self.weight_decay:
            return self.W_dec.new_zeros(())
        squares = self.W_enc.square().sum() + self.W_dec.square().sum()
        return 0.5 * self.weight_decay * squares

    def forward(self, x: Tensor) -> ForwardOutput:
        codes, penalty = self.encode_with_penalty(x)
        penalty = penalty + self.weight_penalty()
        return ForwardOutput(self.decode(codes), codes, penalty)

    def activity_sum(self, codes: Tensor) -> Tensor:
        return self.rule.activity(codes).sum(dim=0)

    @torch.no_grad()
    def before_step(self) -> None:
        """Drop the gradient component that would change the atoms' norms."""
        if self.unit_norm_atoms and self.W_dec.grad is not None:
            grad = self.W_dec.grad
            grad -= (grad * self.W_dec).sum(dim=1, keepdim=True) * self.W_dec

    @torch.no_grad()
    def after_step(self) -> None:
        """Put the atoms back where they belong after the optimizer moved
        them: on the unit sphere, or in the relaxed hull of the archetypes."""
        if self.unit_norm_atoms:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if self.archetypal:
            weights = self.archetype_weights.clamp_(min=0)
            total = weights.sum(dim=1, keepdim=True)
            # A row the step emptied restarts as the mean of the archetypes.
            weights.copy_(
                torch.where(
                    total > 0, weights / total.clamp_min(1e-30), 1 / weights.shape[1]
                )
            )
            offsets = self.archetype_offsets
            norms = offsets.norm(dim=1, keepdim=True)
            offsets.mul_((self.radius / norms.clamp_min(1e-30)).clamp(max=1))


class TopKAutoencoder(LinearAutoencoder):
    """One-layer top-k autoencoder whose training touches only kept latents.

    In training, only the encoder's forward is dense: the encoder's backward
    and the whole decoder work on the ``k`` kept latents of each row
    (:mod:`skae._engine.topk`). Evaluation and inference use dense codes,
    the same as training's for a row.

    How latents are chosen is a :class:`~skae._engine.topk.Selection`, named
    as on the estimator: ``encoder='linear'`` with ``k_mode='row'`` (the
    ``k`` largest pre-activations of each row) or ``'batch'`` (BatchTopK,
    whose running ``threshold`` buffer is kept here), or ``encoder='mp'`` or
    ``'omp'`` (matching pursuit over the decoder's atoms).

    With ``aux_k > 0``, latents that have fired on none of the last
    ``dead_after`` training rows are *dead*, and the auxiliary loss of Gao et
    al. (2024) trains them: the ``aux_k`` largest dead pre-activations of
    each row reconstruct the row's residual ``x - x_hat``, and
    ``aux_k_coef * ||residual - aux_reconstruction||^2`` joins the loss. The
    dead set is read from the device every ``refresh_steps`` steps, not at
    every step.

    With ``matryoshka_sizes`` (Matryoshka dictionaries, Bussmann, Nabeshima
    et al. 2025; the sizes below the whole dictionary), the loss adds, for
    each size ``m``, the squared error of the reconstruction from the codes
    of the first ``m`` latents alone, so that every prefix is a usable
    smaller dictionary.
    """

    refresh_steps = 128

    @property
    def trains_as_it_infers(self) -> bool:
        # BatchTopK trains on the batch's largest values, infers by threshold.
        return self.selection.keeps_k and super().trains_as_it_infers

    def __init__(
        self,
        weights: Weights,
        k: int,
        *,
        aux_k: int = 0,
        aux_k_coef: float = 1 / 32,
        dead_after: int = 10_000_000,
        input_scale: float = 1.0,
        encoder: str = "linear",
        k_mode: str = "row",
        matryoshka_sizes: tuple[int, ...] = (),
    ) -> None:
        super().__init__(weights, TopK(k), input_scale=input_scale)
        self.aux_k = aux_k
        self.aux_k_coef = aux_k_coef
        self.dead_after = dead_after
        self.encoder = encoder
        self.k_mode = k_mode
        self.matryoshka_sizes = tuple(matryoshka_sizes)
        self.register_buffer(
            "rows_since_fired", torch.zeros(self.n_components, dtype=torch.long)
        )
        self.register_buffer("threshold", torch.tensor(math.nan))
        self._dead = None
        self._steps = 0

    @staticmethod
    def upgrade_attributes(attributes: dict) -> dict:
        """Attributes stored by an older skae, under today's names."""
        attributes = dict(attributes)
        selection = attributes.pop("selection", None)
        if selection is not None:
            linear = selection in ("row", "batch")
            attributes.setdefault("encoder", "linear" if linear else selection)
            attributes.setdefault("k_mode", selection if linear else "row")
        for old, new in (
            ("prefix_sizes", "matryoshka_sizes"),
            ("aux_coef", "aux_k_coef"),
        ):
            if old in attributes:
                attributes.setdefault(new, attributes.pop(old))
        return attributes

    def __getstate__(self) -> dict:
        # The cached dead set is a device tensor outside the buffers: copies
        # and pickles keep it on the CPU, so that a model trained on a GPU
        # loads where there is none, and a resumed fit trains the dead set of
        # the last refresh, as an uninterrupted one would.
        dead = None if self._dead is None else self._dead.cpu()
        return {**super().__getstate__(), "_dead": dead}

    def __setstate__(self, state: dict) -> None:
        # Modules pickled before the selections and Matryoshka prefixes.
        defaults = {"encoder": "linear", "k_mode": "row", "matryoshka_sizes": ()}
        state = defaults | self.upgrade_attributes(state)
        buffers = state["_buffers"]
        if "threshold" not in buffers:
            buffers["threshold"] = torch.tensor(math.nan)
        super().__setstate__(state)

    @property
    def k(self) -> int:
        return self.rule.k

    @property
    def selection(self) -> Selection:
        """How this module chooses each row's latents."""
        return selection(self.encoder, self.k_mode)

    # ------------------------------------------------------------- codes

    def encode(self, x: Tensor) -> Tensor:
        kept = self.kept_codes(x)
        if kept is None:
            return self.selection.dense_codes(self, x)
        # Matching pursuit may pick an atom twice: its codes add up.
        codes = kept.values.new_zeros(len(x), self.n_components)
        return codes.scatter_add_(1, kept.indices, kept.values)

    def _decode_kept(self, kept: SparseCodes) -> Tensor:
        """The reconstruction from each row's kept codes, as training makes
        it: the kept atoms summed in float32, not a (batch, width) product
        of mostly zeros."""
        return self.unscaled(
            sparse_decode(kept.values, kept.indices, self.W_dec, self.b_dec)
        )

    def reconstruct(self, x: Tensor) -> Tensor:
        kept = self.kept_codes(x)
        return super().reconstruct(x) if kept is None else self._decode_kept(kept)

    def measure(self, x: Tensor) -> tuple[Tensor, Tensor]:
        kept = self.kept_codes(x)
        if kept is None:
            return super().measure(x)
        error = (self._decode_kept(kept) - x).square().sum(dtype=torch.float64)
        return self.activity_sum(kept), error

    def encode_into(self, x: Tensor, out: Tensor) -> None:
        kept = self.kept_codes(x)
        if kept is None or kept.values.device != out.device:
            super().encode_into(x, out)
            return
        out.scatter_add_(1, kept.indices, kept.values.to(out.dtype))

    def kept_codes(self, x: Tensor) -> SparseCodes | None:
        """The codes of :meth:`encode` as each row's kept latents, ``k`` a
        row (some may be zero), or None for a selection whose rows keep
        however many pass a threshold. Selected as in training: no (batch,
        width) pre-activations, and a bfloat16 product is selected from as
        it is."""
        if not self.selection.keeps_k:
            return None
        return self.selection.kept_codes(self, self._centered(x))

    def _centered(self, x: Tensor) -> Tensor:
        x = self.scaled(x)
        return x - self.b_dec if self.center_input else x

    # ----------------------------------------------------------- training

    def forward(self, x: Tensor) -> ForwardOutput:
        if not self.training:
            kept = self.kept_codes(x)
            if kept is None:
                codes = self.encode(x)
                reconstruction = self.decode(codes)
            else:
                codes, reconstruction = kept, self._decode_kept(kept)
            penalty = self.weight_penalty() + self.prefix_penalty(x, codes)
            return ForwardOutput(reconstruction, codes, penalty)
        centered = self._centered(x)
        codes = self.selection.train_codes(self, centered)
        reconstruction = sparse_decode(
            codes.values, codes.indices, self.W_dec, self.b_dec
        )
        self._count_firing(codes.values, codes.indices, len(x))
        residual = (self.scaled(x) - reconstruction).detach()
        penalty = self.aux_penalty(centered, residual) + self.prefix_penalty(x, codes)
        return ForwardOutput(self.unscaled(reconstruction), codes, penalty)

    def prefix_penalty(self, x: Tensor, codes: Tensor | SparseCodes) -> Tensor:
        """Sum over ``matryoshka_sizes`` of the mean squared error of each
        row's reconstruction from its codes on the prefix's latents alone."""
        total = x.new_zeros(())
        for size in self.matryoshka_sizes:
            if isinstance(codes, SparseCodes):
                values = codes.values * (codes.indices < size)
                prefix = sparse_decode(values, codes.indices, self.W_dec, self.b_dec)
            else:
                prefix = product(
                    torch.addmm, self.b_dec, codes[:, :size], self.W_dec[:size]
                )
            error = x - self.unscaled(prefix)
            total = total + error.square().sum(dim=1).mean()
        return total

    def activity_sum(self, codes: Tensor | SparseCodes) -> Tensor:
        if not isinstance(codes, SparseCodes):
            return super().activity_sum(codes)
        if self.selection.repeats:
            # A latent picked twice in a row counts once.
            dense = codes.values.new_zeros(len(codes.values), self.n_components)
            dense = dense.scatter_add_(1, codes.indices, codes.values)
            return super().activity_sum(dense)
        counts = latent_counts(codes.values, codes.indices, self.n_components)
        return counts.to(codes.values.dtype)

    @torch.no_grad()
    def _count_firing(self, values: Tensor, indices: Tensor, n_rows: int) -> None:
        fired = latent_counts(values, indices, self.n_components) > 0
        self.rows_since_fired.add_(n_rows).masked_fill_(fired, 0)

    def dead_latents(self) -> Tensor:
        """Indices of the latents silent for ``dead_after`` rows (a host sync)."""
        return torch.nonzero(self.rows_since_fired >= self.dead_after).flatten()

    def aux_penalty(self, centered: Tensor, residual: Tensor) -> Tensor:
        """Gao et al.'s auxiliary loss over the dead latents, scaled by
        ``aux_k_coef``; zero when none is dead, ``aux_k`` is 0, or the
        selection does not use the encoder."""
        if not self.aux_k or not self.selection.uses_encoder:
            return centered.new_zeros(())
        # Refresh at least once per dead window, so that small data sets do
        # not wait many epochs for their first dead latents.
        refresh = max(1, min(self.refresh_steps, self.dead_after // len(centered)))
        if self._dead is None or self._steps % refresh == 0:
            self._dead = self.dead_latents()
        elif self._dead.device != centered.device:
            self._dead = self._dead.to(centered.device)
        self._steps += 1
        dead = self._dead
        if len(dead) == 0:
            return centered.new_zeros(())
        k = min(self.aux_k, len(dead))
        values, picked = topk_encode(centered, self.W_enc[dead], self.b_enc[dead], k)
        aux = sparse_decode(values, picked, self.W_dec[dead], self.b_dec.new_zeros(()))
        error = self.unscaled(residual - aux).square().sum(dim=1).mean()
        return self.aux_k_coef * error

    def truncated(self, size: int) -> TopKAutoencoder:
        """A copy that keeps the first ``size`` latents (``k`` capped at it)."""
        weights = Weights(
            self.W_enc[:size].detach().clone(),
            self.b_enc[:size].detach().clone(),
            self.W_dec[:size].detach().clone(),
            self.b_dec.detach().clone(),
        )
        copy = TopKAutoencoder(
            weights,
            min(self.k, size),
            aux_k=min(self.aux_k, size),
            aux_k_coef=self.aux_k_coef,
            dead_after=self.dead_after,
            input_scale=self.input_scale,
            encoder=self.encoder,
            k_mode=self.k_mode,
            matryoshka_sizes=tuple(m for m in self.matryoshka_sizes if m < size),
        ).to(self.W_dec.device)
        if self.archetypal:
            copy.make_archetypal(
                self.archetypes.detach().clone(),
                self.radius,
                self.archetype_weights[:size].detach().clone(),
                self.archetype_offsets[:size].detach().clone(),
            )
            copy = copy.to(self.W_enc.device)
        copy.rows_since_fired.copy_(self.rows_since_fired[:size])
        copy.threshold.copy_(self.threshold)
        return copy


class StackedAutoencoder(Autoencoder):
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

    @property
    def smooth_codes(self) -> bool:
        return self.layers[-1].smooth_codes

    @property
    def trains_as_it_infers(self) -> bool:
        return all(layer.trains_as_it_infers for layer in self.layers)

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
        penalty = 0
        for weight, layer in zip(self.layer_weights, self.layers, strict=True):
            x, sparsity = layer.encode_with_penalty(x)
            penalty = penalty + (weight * sparsity + layer.weight_penalty())
        return ForwardOutput(self.decode(x), x, penalty)

    def activity_sum(self, codes: Tensor) -> Tensor:
        return self.layers[-1].activity_sum(codes)

    @torch.no_grad()
    def atoms(self) -> Tensor:
        """The decodings of the last layer's one-hot codes, less the
        decoding of zero codes: what each latent adds in input space."""
        eye = torch.eye(self.n_components, device=self.layers[0].W_dec.device)
        return self.decode(eye) - self.decode(torch.zeros_like(eye[:1]))

    def before_step(self) -> None:
        for layer in self.layers:
            layer.before_step()

    def after_step(self) -> None:
        for layer in self.layers:
            layer.after_step()


class ConvAutoencoder(Autoencoder):
    """Convolutional sparse autoencoder over flattened (height, width, channels)
    images: a 'same' convolution into feature maps, a sparsity rule on the
    maps, and the transposed convolution back.

    Rows come in and go out flattened, so the module speaks the same 2-D
    language as :class:`LinearAutoencoder`; codes are the maps flattened in
    (map, row, column) order. Filters are ``kernel_size`` square, cut to
    ``2 * side - 1`` along a side shorter than the kernel (one row for 1-D
    signals), where the rest could never touch the image.

    A rule with ``lifetime_sparsity`` below 1 (winner-take-all) keeps each map
    only on the batch's images where it is strongest. Training tracks a
    running average of that cut per map, like batch-norm statistics, and
    :meth:`encode` applies it image by image afterwards, so reconstructions
    and scores of a fitted model match what its decoder learned. The
    features of :meth:`features` keep every map's spatial winners, as in
    Makhzani & Frey's feature extraction.
    """

    cut_momentum = 0.05

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
        kh, kw = min(kernel_size, 2 * height - 1), min(kernel_size, 2 * width - 1)
        filters = torch.randn(n_components, channels, kh, kw, generator=generator)
        filters /= filters.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
        self.W_enc = nn.Parameter(filters.clone())
        # Sigmoid maps start at their target activation, as the dense
        # layers' (uniform_init): from 0.5, Adam's bounded steps would need
        # hundreds of them before the penalty could be met.
        rho = getattr(rule, "rho", None)
        start = 0.0 if rho is None else math.log(rho / (1 - rho))
        self.b_enc = nn.Parameter(torch.full((n_components,), start))
        self.W_dec = nn.Parameter(filters)
        channel_mean = mean.float().view(height, width, channels).mean(dim=(0, 1))
        self.b_dec = nn.Parameter(channel_mean)
        self.register_buffer("lifetime_cut", torch.full((n_components,), -math.inf))

    @property
    def n_components(self) -> int:
        return self.W_dec.shape[0]

    @property
    def padding(self) -> tuple[int, int]:
        return self.W_dec.shape[2] // 2, self.W_dec.shape[3] // 2

    def features(self, x: Tensor) -> Tensor:
        """Maps with the rule's per-image sparsity only: (n, maps, h, w)."""
        height, width, channels = self.image_shape
        images = x.view(-1, height, width, channels).permute(0, 3, 1, 2)
        images = images - self.b_dec[None, :, None, None]
        pre = product(
            nn.functional.conv2d, images, self.W_enc, self.b_enc, padding=self.padding
        )
        return self.rule.activate(pre)

    def maps(self, x: Tensor) -> Tensor:
        """Maps as the decoder sees them, lifetime sparsity included."""
        maps = self.features(x)
        if self.rule.lifetime_sparsity >= 1.0:
            return maps
        if self.training:
            cut = lifetime_cut(maps.detach(), self.rule.lifetime_sparsity)
            with torch.no_grad():
                first = torch.isinf(self.lifetime_cut)
                self.lifetime_cut.copy_(
                    torch.where(
                        first, cut, self.lifetime_cut.lerp(cut, self.cut_momentum)
                    )
                )
            return apply_cut(maps, cut)
        return apply_cut(maps, self.lifetime_cut)

    def encode(self, x: Tensor) -> Tensor:
        return self.maps(x).flatten(1)

    def pooled(self, x: Tensor, pool_size: int | None) -> Tensor:
        maps = self.features(x)
        if pool_size is not None:
            maps = nn.functional.max_pool2d(maps, pool_size, ceil_mode=True)
        return maps.flatten(1)

    def decode(self, codes: Tensor) -> Tensor:
        height, width, _ = self.image_shape
        maps = codes.view(-1, self.n_components, height, width)
        images = product(
            nn.functional.conv_transpose2d, maps, self.W_dec, padding=self.padding
        )
        images = images + self.b_dec[None, :, None, None]
        return images.permute(0, 2, 3, 1).flatten(1)

    def forward(self, x: Tensor) -> ForwardOutput:
        maps = self.maps(x)
        penalty = self.rule.map_penalty(maps, self.W_dec.flatten(1))
        return ForwardOutput(self.decode(maps.flatten(1)), maps.flatten(1), penalty)

    def atoms(self) -> Tensor:
        """Filters (maps, channels, k, k) as rows of (k, k, channels) images."""
        return self.W_dec.permute(0, 2, 3, 1).flatten(1)

    def activity_sum(self, codes: Tensor) -> Tensor:
        """Per map, the rule's activity of its summary, summed over images."""
        height, width, _ = self.image_shape
        maps = codes.view(-1, self.n_components, height, width)
        return self.rule.activity(self.rule.summarize_map(maps)).sum(dim=0)

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
