"""StackedSparseAutoencoder: greedy layer-wise or deep sparse autoencoders."""

from __future__ import annotations

from itertools import pairwise
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import SOLVER_CONSTRAINTS, BaseSparseAutoencoder
from ._docs import fill_doc
from ._engine.data import RowSource, all_rows, column_sums, iter_batches
from ._engine.distributed import current_world
from ._engine.modules import (
    LinearAutoencoder,
    StackedAutoencoder,
)
from ._engine.training import Progress, StoppingRule, train
from ._rules import KINDS, Kind

#: The sparsity kinds a stack's layers may have.
_SPARSITY = ("kl", "l1", "l2", "topk")

#: Parameters with a value per layer, and their ranges: every kind's, and
#: the layers' weights.
_PER_LAYER = {
    **{
        name: interval
        for kind in _SPARSITY
        for name, interval in KINDS[kind].parameters.items()
    },
    "layer_weights": Interval(Real, 0, None, closed="left"),
}


@fill_doc
class StackedSparseAutoencoder(BaseSparseAutoencoder):
    """A stack of sparse autoencoder layers, trained greedily or end to end.

    Layer ``i`` encodes the codes of layer ``i - 1`` into
    ``hidden_layer_sizes[i]`` latents with the same kind of sparsity in every
    layer (``sparsity``), each with its own strength. ``transform`` returns
    the last layer's codes; ``inverse_transform`` decodes them back through
    every layer. The training loss is the reconstruction error of the whole
    stack plus ``sum_i layer_weights[i] * penalty_i``.

    With ``pretrain=True`` (a stacked autoencoder), each layer is first
    trained alone as an autoencoder of the previous layer's codes, for up to
    ``max_iter`` epochs, and the whole stack is then fine-tuned end to end for
    up to ``max_iter`` epochs when ``fine_tune=True``. With ``pretrain=False``
    (a deep sparse autoencoder), the whole stack trains end to end from a
    random start. Greedy pretraining holds one layer's codes for all training
    rows in memory.

    Parameters
    ----------
    hidden_layer_sizes : array-like of int, default=(256, 64)
        Width of each layer, from the input side.
    sparsity : {'kl', 'l1', 'l2', 'topk'}, default='kl'
        The sparsity of every layer: sigmoid units with a target mean
        activation as in :class:`KLSparseAutoencoder`, ReLU units with a
        weighted L1 penalty as in :class:`L1SparseAutoencoder` or a penalty
        on each layer's code norm as in :class:`L2SparseAutoencoder` (the
        loss then adds ``sum_k layer_weights[k] * alpha[k] * ||h_k||``), or
        the ``k`` largest ReLU units as in :class:`KSparseAutoencoder`.
    sparsity_target : float or array-like of float, default=0.05
        ``rho`` of each layer, with ``sparsity='kl'``; one value for all
        layers or one per layer.
    sparsity_weight : float or array-like of float, default=3.0
        ``beta`` of each layer, with ``sparsity='kl'``.
    alpha : float or array-like of float, default=1.0
        Penalty strength of each layer, with ``sparsity='l1'`` or ``'l2'``.
    k : int or array-like of int, default=16
        Active units of each layer, with ``sparsity='topk'``; at most that
        layer's width.
    layer_weights : array-like of float or None, default=None
        ``w_i``, the weight of each layer's penalty in the end-to-end loss;
        None weighs every layer 1.
    weight_decay : float, default=1e-4
        L2 penalty on the weights of every layer, with ``sparsity='kl'``.
    output_activation : {'identity', 'sigmoid'}, default='identity'
        Activation of the reconstruction of X. Inner layers reconstruct the
        codes below them linearly.
    pretrain : bool, default=True
        Train the layers greedily, one at a time, before fine-tuning.
        ``partial_fit`` never pretrains: its first call starts a deep stack
        and every call trains the whole stack end to end for one pass.
    fine_tune : bool, default=True
        Train the whole stack end to end (after pretraining, if any). At
        least one of ``pretrain`` and ``fine_tune`` must be True.
    %(solver_parameters)s
    learning_rate : float, default=1e-2
        Adam's step size, in pretraining and fine-tuning.
    %(training_parameters)s

    Attributes
    ----------
    components_ : ndarray of shape (hidden_layer_sizes[-1], n_features)
        What each last-layer latent adds to the reconstruction:
        ``inverse_transform`` of that latent set to 1, minus that of all
        codes 0. For a single layer with identity output these are its atoms.
    activation_frequency_ : ndarray of shape (hidden_layer_sizes[-1],)
        Activity of each last-layer latent over the training rows: its
        firing frequency ('l1', 'topk') or mean activation ('kl'), as the
        steps of the last epoch of ``fit`` saw it (measured with the kept
        weights where these are an earlier epoch's).
    layers_ : list of torch.nn.Module
        The fitted layers, from the input side.
    pretrain_loss_curves_ : list of list of float
        Training loss per epoch of each layer's greedy pretraining (empty
        lists without pretraining).
    %(fitted_attributes)s

    See Also
    --------
    KLSparseAutoencoder, L1SparseAutoencoder, KSparseAutoencoder :
        The single layers.

    References
    ----------
    .. [1] Y. Bengio et al., "Greedy Layer-Wise Training of Deep Networks",
       NeurIPS 2006.
    .. [2] A. Ng, "Sparse autoencoder", CS294A Lecture notes, Stanford, 2011.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skae import StackedSparseAutoencoder
    >>> X = load_digits().data / 16
    >>> sae = StackedSparseAutoencoder(hidden_layer_sizes=(64, 16), max_iter=5,
    ...                                random_state=0).fit(X)
    >>> sae.transform(X).shape
    (1797, 16)
    >>> [codes.shape[1] for codes in sae.encode_layers(X)]
    [64, 16]
    """

    _parameter_constraints: dict = {
        **BaseSparseAutoencoder._parameter_constraints,
        **SOLVER_CONSTRAINTS,
        "hidden_layer_sizes": ["array-like"],
        "sparsity": [StrOptions(set(_SPARSITY))],
        **{name: [interval, "array-like"] for name, interval in _PER_LAYER.items()},
        "layer_weights": [Interval(Real, 0, None, closed="left"), "array-like", None],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "output_activation": [StrOptions({"identity", "sigmoid"})],
        "pretrain": ["boolean"],
        "fine_tune": ["boolean"],
    }

    def __init__(
        self,
        hidden_layer_sizes=(256, 64),
        sparsity="kl",
        *,
        sparsity_target=0.05,
        sparsity_weight=3.0,
        alpha=1.0,
        k=16,
        layer_weights=None,
        weight_decay=1e-4,
        output_activation="identity",
        pretrain=True,
        fine_tune=True,
        solver="adam",
        learning_rate=1e-2,
        learning_rate_schedule="constant",
        warmup=0.0,
        batch_size=256,
        max_iter=100,
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=False,
        validation_fraction=0.1,
        warm_start=False,
        device="auto",
        precision="auto",
        random_state=None,
        verbose=0,
        checkpoint_path=None,
        checkpoint_interval=1,
    ):
        self._store_params(locals())

    # ------------------------------------------------------------ parameters

    def _sizes(self) -> list[int]:
        return [int(size) for size in np.ravel(self.hidden_layer_sizes)]

    def _per_layer(self, name: str) -> list:
        """``name``'s value for each layer: a scalar repeated, or the sequence."""
        value = getattr(self, name)
        n_layers = len(self._sizes())
        if np.ndim(value) == 0:
            return [value] * n_layers
        return list(np.ravel(value))

    def _check_params(self) -> None:
        sizes = np.ravel(self.hidden_layer_sizes)
        if sizes.size == 0 or not all(
            isinstance(s, Integral | np.integer)
            and not isinstance(s, bool | np.bool_)
            and s >= 1
            for s in sizes
        ):
            raise ValueError(
                "hidden_layer_sizes must be a non-empty sequence of positive "
                f"integers, got {self.hidden_layer_sizes!r}."
            )
        n_layers = sizes.size
        # Every rule's values, the inactive ones too: a grid search that
        # switches sparsity must not meet a bad value it was never told of.
        for name in _PER_LAYER:
            value = getattr(self, name)
            if value is None:
                continue
            if np.ndim(value) and np.size(value) != n_layers:
                raise ValueError(
                    f"{name} has {np.size(value)} values but hidden_layer_sizes has "
                    f"{n_layers} layers; give one value, or one per layer."
                )
            interval = _PER_LAYER[name]
            for item in np.ravel(value):
                if not (interval.is_satisfied_by(item) and np.isfinite(item)):
                    raise ValueError(
                        f"every value of {name} must be a finite number {interval}; "
                        f"got {item!r}."
                    )
        if self.sparsity == "topk":
            for i, (k, size) in enumerate(
                zip(self._per_layer("k"), sizes, strict=True)
            ):
                if k > size:
                    raise ValueError(
                        f"k={k} for layer {i} must be at most its width {size}."
                    )
        if not (self.pretrain or self.fine_tune):
            raise ValueError(
                "pretrain=False and fine_tune=False would train nothing; set at "
                "least one of them to True."
            )

    def _architecture(self) -> dict:
        return {"hidden_layer_sizes": tuple(self._sizes()), "sparsity": self.sparsity}

    def _check_incremental(self) -> None:
        super()._check_incremental()
        if self.warm_start and not self.fine_tune:
            raise ValueError(
                "warm_start continues a fitted stack by end-to-end training, which "
                "fine_tune=False turns off; set fine_tune=True or warm_start=False."
            )

    def _batch_work(self, n_rows: int, n_features: int) -> int:
        sizes = [n_features, *self._sizes()]
        return 2 * n_rows * sum(a * b for a, b in pairwise(sizes))

    def _width(self) -> int:
        return self._sizes()[-1]

    def _training_epochs(self, n_rows: int) -> int:
        return self._planned_epochs(n_rows) if self.fine_tune else 0

    # --------------------------------------------------------------- modules

    def _kind(self) -> Kind:
        return KINDS[self.sparsity]

    def _layer_rule(self, i: int):
        kind = self._kind()
        return kind.rule({name: self._per_layer(name)[i] for name in kind.parameters})

    def _layer_settings(self, i: int) -> dict:
        # Inner layers reconstruct the codes below them linearly: sigmoid
        # outputs there stall end-to-end training of deep stacks.
        output = self.output_activation if i == 0 else "identity"
        return {**self._settings(), "output_activation": output}

    def _solver_rules(self) -> list:
        return [self._layer_rule(i) for i in range(len(self._sizes()))]

    def _make_layer(self, i, n_inputs, width, mean, generator) -> LinearAutoencoder:
        settings = self._layer_settings(i)
        rule = self._layer_rule(i)
        return self._kind().layer(rule, n_inputs, width, mean, generator, settings)

    def _module_skeleton(self, n_features: int) -> StackedAutoencoder:
        generator = torch.Generator()
        widths = self._sizes()
        layers = [
            self._make_layer(i, n_inputs, width, torch.zeros(n_inputs), generator)
            for i, (n_inputs, width) in enumerate(pairwise([n_features, *widths]))
        ]
        return StackedAutoencoder(layers, self._layer_weights())

    def _parameter_count(self, n_features: int) -> int:
        sizes = [n_features, *self._sizes()]
        return sum(2 * a * b + a + b for a, b in pairwise(sizes))

    def _activation_count(self, n_rows: int, n_features: int, device) -> int:
        return 2 * n_rows * sum(self._sizes())

    def _size_parameters(self) -> dict:
        return {"hidden_layer_sizes": self.hidden_layer_sizes}

    def _layer_weights(self) -> list[float]:
        if self.layer_weights is None:
            return [1.0] * len(self._sizes())
        return [float(w) for w in self._per_layer("layer_weights")]

    def _update_module(self, module) -> None:
        for i, layer in enumerate(module.layers):
            self._kind().update(layer, self._layer_rule(i), self._layer_settings(i))
        module.layer_weights = self._layer_weights()

    def _initial_module(self, source, train_rows, rng, device, *, pretrain, sums):
        pretrain = pretrain and self.pretrain
        if pretrain and current_world() is not None:
            raise ValueError(
                "Greedy pretraining does not run under torch.distributed: "
                "use pretrain=False to train the stack end to end, or pretrain "
                "on one process and continue with warm_start."
            )
        stack = StackedAutoencoder([], self._layer_weights())
        curves = []
        # Greedy pretraining trains layer i on layer i-1's codes, held in
        # memory; otherwise layer i only needs their mean to start from.
        layer_source, layer_rows = source, train_rows
        n_inputs = source.n_features
        for i, width in enumerate(self._sizes()):
            if i == 0:
                col_sum, _, n = sums
                mean = torch.from_numpy(col_sum / n)
            elif pretrain:
                col_sum, _, n = column_sums(layer_source, layer_rows)
                mean = torch.from_numpy(col_sum / n)
            else:
                mean = self._mean_codes(stack, source, train_rows, device)
            generator = torch.Generator().manual_seed(int(rng.randint(2**31 - 1)))
            layer = self._make_layer(i, n_inputs, width, mean, generator).to(device)
            stack.layers.append(layer)
            curves.append([])
            if pretrain:
                curves[-1] = self._pretrain_layer(
                    layer, i, layer_source, layer_rows, rng, device
                )
                if i < len(self._sizes()) - 1:
                    codes = self._layer_codes(layer, layer_source, layer_rows, device)
                    layer_source = RowSource(codes)
                    layer_rows = all_rows(layer_source)
            n_inputs = width
        stack.pretrain_loss_curves = curves
        return stack

    @torch.no_grad()
    def _mean_codes(self, stack, source, rows, device) -> torch.Tensor:
        """Mean of the stack's last codes over ``rows``, streamed."""
        stack.eval()
        total, chunks = None, rows.ordered(source.chunk_rows(self.batch_size))
        for x in iter_batches(source, chunks, self._inference_batch_rows(), device):
            batch_sum = stack.encode(x).double().sum(dim=0)
            total = batch_sum if total is None else total + batch_sum
        return (total / len(rows)).cpu()

    def _pretrain_layer(self, layer, i, source, rows, rng, device) -> list[float]:
        """Train one layer alone as an autoencoder of its inputs."""
        name = f"{type(self).__name__} layer {i + 1}"
        epochs = self._planned_epochs(len(rows))
        history = train(
            layer,
            self._new_optimizer(layer.parameters()),
            self._epoch_batches(source, rows, rng, device),
            StoppingRule(epochs, self.tol, self.n_iter_no_change),
            callbacks=[Progress(epochs, len(rows), name)] if self.verbose else [],
            probe=self._probe(source, rows, device),
            schedule=self._schedule(epochs, len(rows)),
        )
        if history.interrupted:
            # The stack is not whole yet: there is no model to keep.
            raise KeyboardInterrupt(
                f"Interrupted while pretraining layer {i + 1} of "
                f"{len(self._sizes())}: the stack was incomplete, so "
                f"{type(self).__name__} is left as it was before fit."
            )
        return history.loss

    @torch.no_grad()
    def _layer_codes(self, layer, source, rows, device) -> np.ndarray:
        """The layer's codes for ``rows``, in order, as the next layer's data."""
        layer.eval()
        chunks = rows.ordered(source.chunk_rows(self.batch_size))
        batches = iter_batches(source, chunks, self._inference_batch_rows(), device)
        return np.concatenate([layer.encode(x).cpu().numpy() for x in batches])

    def _set_fitted_state(self, module, optimizer, dtype, history, incremental):
        super()._set_fitted_state(module, optimizer, dtype, history, incremental)
        if not incremental:
            self.pretrain_loss_curves_ = module.pretrain_loss_curves

    # ------------------------------------------------------------- inference

    @property
    def layers_(self) -> list[torch.nn.Module]:
        """The fitted layers, from the input side."""
        return list(self.module_.layers)

    def encode_layers(self, X) -> list[np.ndarray]:
        """Codes of X at every layer.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        codes : list of ndarray
            One array of shape (n_samples, hidden_layer_sizes[i]) per layer,
            from the input side; the last one is ``transform(X)``.
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        widths = [layer.n_components for layer in self.module_.layers]
        stacked = self._map_batches(
            X, lambda m, x: torch.cat(m.encode_layers(x), dim=1), sum(widths)
        )
        return np.split(stacked, np.cumsum(widths)[:-1], axis=1)
