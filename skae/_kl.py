"""KLSparseAutoencoder: sigmoid codes with a target mean activation (CS294A)."""

from __future__ import annotations

from numbers import Integral, Real

from sklearn.utils._param_validation import Interval, StrOptions

from ._base import DICTIONARY_CONSTRAINTS, SOLVER_CONSTRAINTS, BaseSparseAutoencoder
from ._docs import fill_doc


@fill_doc
class KLSparseAutoencoder(BaseSparseAutoencoder):
    """Sparse autoencoder whose sigmoid units have a target mean activation.

    The autoencoder of Andrew Ng's CS294A notes. Each latent is a sigmoid,
    and its mean activation over a batch, ``rho_hat_j``, is pulled towards
    a small target ``rho`` by the penalty
    ``sparsity_weight * sum_j s(rho, rho_hat_j)``, where ``s`` is the
    Kullback-Leibler divergence between Bernoulli variables of means
    ``rho`` and ``rho_hat_j`` (default), ``|rho - rho_hat_j|`` or
    ``(rho - rho_hat_j)^2``. An L2 penalty ``weight_decay / 2 * ||W||^2`` on
    the encoder and decoder weights keeps them small. Each unit is then
    active on few samples: *lifetime* sparsity rather than the per-sample
    sparsity of :class:`KSparseAutoencoder`. Codes are in (0, 1) and never
    exactly zero.

    Parameters
    ----------
    n_components : int, default=128
        Number of hidden units.
    sparsity_target : float, default=0.05
        ``rho``, the target mean activation of each unit, in (0, 1).
    sparsity_weight : float, default=3.0
        ``beta``, the weight of the sparsity penalty, ``>= 0``. The
        reconstruction term is the squared error per sample, not halved as
        in CS294A, so ``beta`` here acts as ``beta / 2`` there.
    sparsity_loss : {'kl', 'l1', 'l2'}, default='kl'
        The divergence ``s`` between ``rho`` and ``rho_hat_j``. 'l2' pulls
        weakly once ``rho_hat_j`` is near ``rho`` (its gradient vanishes
        there), so mean activations stay further from the target.
    weight_decay : float, default=1e-4
        ``lambda``, the L2 penalty on the weights, ``>= 0``; like ``beta``,
        it acts as ``lambda / 2`` of CS294A's halved objective. Low-variance
        data make it strong: on CS294A's patches (25 units, rho=0.01),
        1e-4 learns edge detectors (explained variance 0.39), 3e-4 makes
        most atoms alike (0.13), and 1e-3 makes them all the same flat
        pattern (0.00).
    output_activation : {'identity', 'sigmoid'}, default='identity'
        Activation of the reconstruction. Use 'sigmoid' for data scaled into
        (0, 1), as in CS294A (for instance ``make_image_patches(...,
        preprocessing='cs294a')``).
    %(dictionary_parameters)s
    %(solver_parameters)s
    learning_rate : float, default=1e-2
        Adam's step size. Sigmoid units with a small target activation learn
        slowly at smaller steps and can settle with every unit at a constant
        ``rho``, which satisfies the penalty and codes nothing.
    %(training_parameters)s

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Decoder weights, one row per hidden unit.
    activation_frequency_ : ndarray of shape (n_components,)
        Mean activation of each unit over the training rows, as the steps of
        the last epoch of ``fit`` saw it (measured with the kept weights
        where these are an earlier epoch's) and during the pass of the last
        ``partial_fit``: the ``rho_hat_j`` that the penalty pulls towards
        ``sparsity_target``.
    %(fitted_attributes)s

    See Also
    --------
    KSparseAutoencoder : Exactly ``k`` active latents per sample.
    L1SparseAutoencoder : L1 penalty on ReLU activations.

    References
    ----------
    .. [1] A. Ng, "Sparse autoencoder", CS294A Lecture notes, Stanford, 2011.

    Examples
    --------
    >>> from skae import KLSparseAutoencoder
    >>> from skae.datasets import make_image_patches
    >>> X = make_image_patches(2000, preprocessing="cs294a", random_state=0)
    >>> sae = KLSparseAutoencoder(n_components=25, sparsity_target=0.05,
    ...                           output_activation="sigmoid", max_iter=30,
    ...                           random_state=0).fit(X)
    >>> sae.transform(X).shape
    (2000, 25)
    """

    _sparsity_kind = "kl"

    _parameter_constraints: dict = {
        **BaseSparseAutoencoder._parameter_constraints,
        **SOLVER_CONSTRAINTS,
        **DICTIONARY_CONSTRAINTS,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "sparsity_target": [Interval(Real, 0, 1, closed="neither")],
        "sparsity_weight": [Interval(Real, 0, None, closed="left")],
        "sparsity_loss": [StrOptions({"kl", "l1", "l2"})],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "output_activation": [StrOptions({"identity", "sigmoid"})],
    }

    def __init__(
        self,
        n_components=128,
        sparsity_target=0.05,
        sparsity_weight=3.0,
        sparsity_loss="kl",
        weight_decay=1e-4,
        output_activation="identity",
        *,
        dictionary="free",
        relaxation=0.1,
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
