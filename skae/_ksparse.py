"""KSparseAutoencoder: top-k sparse codes."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import BaseSparseAutoencoder
from ._docs import fill_doc
from ._engine.modules import TopKAutoencoder, tied_init
from ._sparsity import TopK


@fill_doc
class KSparseAutoencoder(BaseSparseAutoencoder):
    """k-sparse autoencoder: each sample is coded by at most ``k`` atoms.

    The encoder keeps the ``k`` largest pre-activations of every sample and
    applies a ReLU to them; all other codes are exactly zero. The decoder
    adds the corresponding dictionary atoms, kept at unit L2 norm, to a
    learned input-space bias. This is the k-sparse autoencoder of Makhzani &
    Frey (2013) in the form of Gao et al. (2024): the bias starts at the data
    mean, the encoder starts as the decoder's transpose, and the ReLU keeps
    codes non-negative.

    Unlike PCA, the k active atoms differ from sample to sample, so an
    overcomplete dictionary (``n_components`` larger than the number of
    features) is useful: codes stay sparse while the dictionary grows.

    Parameters
    ----------
    n_components : int, default=128
        Number of latents (dictionary atoms). More atoms reconstruct better
        at the same ``k`` but train slower and may leave some atoms dead
        (never selected).
    k : int, default=16
        Number of non-zero codes per sample, ``1 <= k <= n_components``.
        Smaller ``k`` gives sparser, more interpretable codes and worse
        reconstruction.
    aux_k : 'auto' or int, default='auto'
        Latents of the auxiliary loss that revives dead latents (Gao et al.
        2024): a latent is dead when it has fired on none of the last 10
        million training rows, or of a whole epoch when that is shorter. The
        ``aux_k`` largest dead pre-activations of each row then reconstruct
        what the live latents missed, which pulls dead encoders back towards
        the data. 0 turns it off; 'auto' uses ``n_features // 2`` (at least
        ``k``) for wide dictionaries, ``n_components >= 4 * n_features``,
        and 0 otherwise.
    aux_k_coef : float, default=1/32
        Weight of the auxiliary loss, ``>= 0``.
    normalize_input : bool, default=False
        Scale the data by one factor so that the training rows' mean squared
        norm is ``n_features``, as Gao et al. do for activations, so that
        ``learning_rate`` suits data of any scale. ``transform`` applies the
        same factor and ``inverse_transform`` undoes it; ``input_scale_``
        holds it.
    learning_rate : float, default=3e-3
        Adam's step size.
    %(training_parameters)s

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Dictionary atoms (the decoder's rows), each of unit L2 norm.
    activation_frequency_ : ndarray of shape (n_components,)
        Fraction of training rows on which each latent is non-zero, measured
        with the final weights after ``fit`` and during the pass of the last
        ``partial_fit``. Zeros are dead latents.
    input_scale_ : float
        The factor applied to the input: 1 unless ``normalize_input``.
    %(fitted_attributes)s

    See Also
    --------
    sklearn.decomposition.PCA : Dense linear codes of a fixed subspace.
    sklearn.decomposition.MiniBatchDictionaryLearning : Sparse codes from an
        optimization per sample instead of a learned encoder.

    References
    ----------
    .. [1] A. Makhzani and B. Frey, "k-Sparse Autoencoders", ICLR 2014,
       arXiv:1312.5663.
    .. [2] L. Gao et al., "Scaling and evaluating sparse autoencoders",
       arXiv:2406.04093, 2024.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skae import KSparseAutoencoder
    >>> X = load_digits().data / 16
    >>> sae = KSparseAutoencoder(n_components=64, k=8, max_iter=20, random_state=0)
    >>> codes = sae.fit_transform(X)
    >>> codes.shape
    (1797, 64)
    >>> int((codes != 0).sum(axis=1).max())
    8
    """

    _parameter_constraints: dict = {
        **BaseSparseAutoencoder._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "k": [Interval(Integral, 1, None, closed="left")],
        "aux_k": [StrOptions({"auto"}), Interval(Integral, 0, None, closed="left")],
        "aux_k_coef": [Interval(Real, 0, None, closed="left")],
        "normalize_input": ["boolean"],
    }

    def __init__(
        self,
        n_components=128,
        k=16,
        *,
        aux_k="auto",
        aux_k_coef=1 / 32,
        normalize_input=False,
        learning_rate=3e-3,
        batch_size=256,
        max_iter=100,
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=False,
        validation_fraction=0.1,
        warm_start=False,
        device="auto",
        random_state=None,
        verbose=0,
        checkpoint_path=None,
        checkpoint_interval=1,
    ):
        self._store_params(locals())

    def _check_params(self) -> None:
        if self.k > self.n_components:
            raise ValueError(
                f"k={self.k} must be at most n_components={self.n_components}: "
                "a sample cannot use more atoms than the dictionary has."
            )

    def _update_module(self, module) -> None:
        module.rule = TopK(self.k)
        module.aux_k = self._aux_k(module.W_dec.shape[1])
        module.aux_coef = self.aux_k_coef

    def _architecture(self) -> dict:
        # The input scale is fixed when the model starts.
        return {
            "n_components": self.n_components,
            "normalize_input": self.normalize_input,
        }

    def _set_fitted_state(self, module, optimizer, dtype, history, incremental):
        super()._set_fitted_state(module, optimizer, dtype, history, incremental)
        self.input_scale_ = module.input_scale

    def _aux_k(self, n_features: int) -> int:
        if self.aux_k == "auto":
            # Gao et al. use d / 2; narrow dictionaries rarely have dead latents.
            wide = self.n_components >= 4 * n_features
            return min(max(n_features // 2, self.k), self.n_components) if wide else 0
        return min(self.aux_k, self.n_components)

    def _make_module(self, n_features, mean, generator) -> torch.nn.Module:
        weights = tied_init(mean, self.n_components, generator)
        return TopKAutoencoder(
            weights,
            self.k,
            aux_k=self._aux_k(n_features),
            aux_coef=self.aux_k_coef,
        )

    def _adapt_to_data(self, module, *, mean_squared_norm, epoch_rows) -> None:
        # Dead means silent for 10M rows (Gao et al.) or a whole epoch.
        module.dead_after = min(10_000_000, epoch_rows or 10_000_000)
        if self.normalize_input and mean_squared_norm > 0:
            scale = math.sqrt(module.W_dec.shape[1] / mean_squared_norm)
            module.input_scale = scale
            with torch.no_grad():
                module.b_dec.mul_(scale)
