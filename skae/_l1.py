"""L1SparseAutoencoder: ReLU codes with an atom-norm-weighted L1 penalty."""

from __future__ import annotations

from numbers import Integral, Real

from sklearn.utils._param_validation import Interval

from ._base import DICTIONARY_CONSTRAINTS, SOLVER_CONSTRAINTS, BaseSparseAutoencoder
from ._docs import fill_doc


@fill_doc
class L1SparseAutoencoder(BaseSparseAutoencoder):
    """Sparse autoencoder with ReLU codes and an L1 penalty on activations.

    The loss is the squared reconstruction error plus
    ``alpha * sum_i |h_i| * ||d_i||`` per sample: each activation is weighted
    by the L2 norm of its decoder atom, so the penalty cannot be dodged by
    shrinking the codes and growing the atoms. Unlike
    :class:`KSparseAutoencoder`, the number of active latents varies from
    sample to sample and is set indirectly by ``alpha``.

    Parameters
    ----------
    n_components : int, default=128
        Number of latents (dictionary atoms).
    alpha : float, default=1.0
        Strength of the sparsity penalty, ``>= 0``. Larger values give fewer
        active latents per sample and a worse reconstruction; 0 gives a
        plain ReLU autoencoder. The penalty is on the scale of the squared
        error of one sample, so standardize X before comparing values of
        ``alpha`` across datasets.
    %(dictionary_parameters)s
    %(solver_parameters)s
    learning_rate : float, default=3e-3
        Adam's step size.
    %(training_parameters)s

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Dictionary atoms (the decoder's rows). Their norms are free; the
        penalty accounts for them.
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
    sklearn.decomposition.MiniBatchDictionaryLearning : L1-penalized sparse
        coding solved per sample.

    References
    ----------
    .. [1] T. Bricken et al., "Towards Monosemanticity: Decomposing Language
       Models With Dictionary Learning", Transformer Circuits Thread, 2023.
    .. [2] A. Templeton et al., "Scaling Monosemanticity", Transformer
       Circuits Thread, 2024.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skae import L1SparseAutoencoder
    >>> X = load_digits().data / 16
    >>> sae = L1SparseAutoencoder(n_components=64, alpha=0.5, max_iter=20,
    ...                           random_state=0)
    >>> codes = sae.fit_transform(X)
    >>> codes.shape
    (1797, 64)
    >>> bool((codes >= 0).all())
    True
    """

    _sparsity_kind = "l1"

    _parameter_constraints: dict = {
        **BaseSparseAutoencoder._parameter_constraints,
        **SOLVER_CONSTRAINTS,
        **DICTIONARY_CONSTRAINTS,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_components=128,
        alpha=1.0,
        *,
        dictionary="free",
        relaxation=0.1,
        solver="adam",
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
