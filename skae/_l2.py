"""L2SparseAutoencoder: ReLU codes with a penalty on each sample's code norm."""

from __future__ import annotations

from ._base import BaseSparseAutoencoder
from ._docs import fill_doc
from ._l1 import L1SparseAutoencoder


@fill_doc
class L2SparseAutoencoder(BaseSparseAutoencoder):
    """Sparse autoencoder with ReLU codes and a penalty on each sample's code norm.

    The loss is the squared reconstruction error plus
    ``alpha * ||(h_i * ||d_i||)_i||_2`` per sample: the L2 norm (not its
    square) of the sample's activation vector, each activation weighted by
    the norm of its decoder atom so that the penalty cannot be dodged by
    shrinking the codes and growing the atoms. It is the L2 sparse
    autoencoder of the seed documents, a group lasso over a sample's
    latents: where :class:`L1SparseAutoencoder` makes each sample use few
    latents, this one makes many samples use none, and lets the others use
    as many as they need. Choose it when a share of the samples are
    explained by the mean alone (background, normal operation) and the rest
    need a full code: its non-zero rows flag them.

    Parameters
    ----------
    n_components : int, default=128
        Number of latents (dictionary atoms).
    alpha : float, default=ALPHA
        Strength of the penalty, ``>= 0``. Larger values send more samples
        to an all-zero code (their reconstruction is then the mean); 0
        gives a plain ReLU autoencoder. The penalty is on the scale of the
        norm of one sample, so standardize X before comparing values of
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
    L1SparseAutoencoder : Few active latents per sample.
    KSparseAutoencoder : Exactly ``k`` active latents per sample.

    References
    ----------
    .. [1] M. Yuan and Y. Lin, "Model selection and estimation in regression
       with grouped variables", J. R. Statist. Soc. B, 68(1), 2006.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skae import L2SparseAutoencoder
    >>> X = StandardScaler().fit_transform(load_digits().data)
    >>> sae = L2SparseAutoencoder(n_components=64, max_iter=20, random_state=0)
    >>> codes = sae.fit_transform(X)
    >>> codes.shape
    (1797, 64)
    >>> bool((codes >= 0).all())
    True
    """

    _sparsity_kind = "l2"

    # The parameters of L1SparseAutoencoder, a norm apart.
    _parameter_constraints: dict = L1SparseAutoencoder._parameter_constraints

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
