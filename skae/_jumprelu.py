"""JumpReLUSparseAutoencoder: learned thresholds and an L0 penalty."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import DICTIONARY_CONSTRAINTS, BaseSparseAutoencoder
from ._docs import fill_doc


@fill_doc
class JumpReLUSparseAutoencoder(BaseSparseAutoencoder):
    """JumpReLU sparse autoencoder: codes above learned thresholds, L0 penalty.

    Each latent ``j`` has a threshold ``theta_j > 0``, learned with the
    rest of the model. Its code is its pre-activation where that exceeds
    ``theta_j`` and exactly 0 elsewhere: ``h_j = z_j * H(z_j - theta_j)``,
    with ``z = (x - b) @ W_enc.T + b_enc``. The loss is the squared
    reconstruction error plus ``sparsity_weight`` times the number of
    non-zero codes (L0) per sample. Because the penalty counts codes rather
    than adding up their sizes, it does not shrink the codes that stay on,
    unlike :class:`L1SparseAutoencoder`; and unlike
    :class:`KSparseAutoencoder`, the number of active latents varies from
    sample to sample.

    A step function has no useful gradient, so the thresholds learn from
    the straight-through estimators of Rajamanoharan et al. (2024): kernel
    density estimates, ``bandwidth`` wide, of how the expected loss changes
    as a threshold moves. Atoms are kept at unit L2 norm, so a threshold is
    the smallest coefficient an atom can have in a reconstruction, in the
    units of X.

    Parameters
    ----------
    n_components : int, default=128
        Number of latents (dictionary atoms).
    sparsity_weight : float, default=1.0
        Price of one non-zero code, ``>= 0``, in the units of one sample's
        squared error. Dropping a code ``c`` of a unit atom costs about
        ``c^2`` of squared error, so the thresholds settle near
        ``sqrt(sparsity_weight)``: larger values give fewer active latents
        and a worse reconstruction, and 0 gives a plain autoencoder whose
        thresholds only help reconstruction. On standardized data of 64 to
        100 features, 1.0 gives 7 to 23 non-zero codes per sample. The
        scale depends on the data: standardize X, then tune it on a log
        grid (0.1, 0.3, 1, 3).
    bandwidth : float, default=0.1
        Width ``epsilon > 0`` of the rectangle kernel of the thresholds'
        gradient estimates, in the units of X: a threshold learns from the
        samples whose pre-activation lies within ``epsilon / 2`` of it.
        Smaller values estimate with less bias and more noise. 0.1 suits
        standardized data, whose thresholds are of order 1; the paper's
        0.001 is for language-model activations scaled to unit mean
        squared norm, whose coordinates are much smaller.
    initial_threshold : 'auto' or float, default='auto'
        Starting value of every threshold, ``> 0``. 'auto' starts at
        ``sqrt(sparsity_weight)`` (at least 0.001), the value the
        thresholds settle near: thresholds far below it start almost every
        latent active, and training may then settle in a nearly dense
        model that the penalty does not leave.
    %(dictionary_parameters)s
    learning_rate : float, default=3e-3
        Adam's step size. Thresholds are learned as logarithms, so they
        change by a factor of about ``1 + learning_rate`` per step at most.
    %(training_parameters)s

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Dictionary atoms (the decoder's rows), each of unit L2 norm.
    threshold_ : ndarray of shape (n_components,)
        The learned thresholds ``theta``, in the units of X: a latent's
        code is non-zero exactly where its pre-activation exceeds its
        threshold.
    activation_frequency_ : ndarray of shape (n_components,)
        Fraction of training rows on which each latent is non-zero, as the
        steps of the last epoch of ``fit`` saw them (so the model costs no
        pass of its own after training; measured with the kept weights
        where these are an earlier epoch's) and during the pass of the last
        ``partial_fit``. Zeros are dead latents.
    %(fitted_attributes)s

    See Also
    --------
    KSparseAutoencoder : Exactly ``k`` active latents per sample.
    L1SparseAutoencoder : ReLU codes with an L1 penalty, which shrinks them.

    Notes
    -----
    With ``theta = exp(log_threshold)`` and the rectangle kernel
    ``K(u) = 1[|u| <= 1/2]``, the pseudo-derivatives with respect to
    ``theta`` are ``-(theta / epsilon) K((z - theta) / epsilon)`` for the
    code and ``-(1 / epsilon) K((z - theta) / epsilon)`` for the L0 count;
    the code passes the gradient ``H(z - theta)`` back to ``z``, and the
    count passes none. The encoder thus learns from the reconstruction
    alone, and the penalty acts through the thresholds.

    References
    ----------
    .. [1] S. Rajamanoharan et al., "Jumping Ahead: Improving Reconstruction
       Fidelity with JumpReLU Sparse Autoencoders", arXiv:2407.14435, 2024.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skae import JumpReLUSparseAutoencoder
    >>> X = StandardScaler().fit_transform(load_digits().data)
    >>> sae = JumpReLUSparseAutoencoder(n_components=64, max_iter=10,
    ...                                 random_state=0)
    >>> codes = sae.fit_transform(X)
    >>> codes.shape
    (1797, 64)
    >>> sae.threshold_.shape
    (64,)
    >>> bool(((codes == 0) | (codes > sae.threshold_)).all())
    True
    """

    _sparsity_kind = "jumprelu"

    _parameter_constraints: dict = {
        **BaseSparseAutoencoder._parameter_constraints,
        **DICTIONARY_CONSTRAINTS,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "sparsity_weight": [Interval(Real, 0, None, closed="left")],
        "bandwidth": [Interval(Real, 0, None, closed="neither")],
        "initial_threshold": [
            StrOptions({"auto"}),
            Interval(Real, 0, None, closed="neither"),
        ],
    }

    def __init__(
        self,
        n_components=128,
        sparsity_weight=1.0,
        bandwidth=0.1,
        *,
        dictionary="free",
        relaxation=0.1,
        initial_threshold="auto",
        learning_rate=3e-3,
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

    def _settings(self) -> dict:
        threshold = self.initial_threshold
        if threshold == "auto":
            threshold = max(math.sqrt(self.sparsity_weight), 1e-3)
        return {**super()._settings(), "initial_threshold": threshold}

    def _set_fitted_state(self, module, optimizer, dtype, history, incremental):
        super()._set_fitted_state(module, optimizer, dtype, history, incremental)
        # In the dtype that transform computes in, so codes compare exactly.
        dtype = torch.float64 if self.components_.dtype == np.float64 else torch.float32
        log_threshold = module.log_threshold.detach().cpu().to(dtype)
        self.threshold_ = log_threshold.exp().numpy()
