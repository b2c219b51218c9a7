"""KSparseAutoencoder: top-k sparse codes."""

from __future__ import annotations

import copy
import math
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import DICTIONARY_CONSTRAINTS, BaseSparseAutoencoder, _output_dtype
from ._docs import fill_doc
from ._engine.modules import TopKAutoencoder, tied_init

#: The peak step size of ``learning_rate='auto'`` up to 256 latents.
AUTO_LEARNING_RATE = 1e-2


@fill_doc
class KSparseAutoencoder(BaseSparseAutoencoder):
    """k-sparse autoencoder: each sample is coded by at most ``k`` atoms.

    The encoder keeps the ``k`` largest pre-activations of every sample and
    applies a ReLU to them; all other codes are exactly zero. The decoder
    adds the corresponding dictionary atoms, kept at unit L2 norm, to a
    learned input-space bias. This is the k-sparse autoencoder of Makhzani &
    Frey (2013) in the form of Gao et al. (2024): the bias starts at the data
    mean, the encoder starts as the decoder's transpose, and the ReLU keeps
    codes non-negative. ``k_mode``, ``encoder`` and ``matryoshka_sizes``
    select the BatchTopK, matching-pursuit and Matryoshka variants.

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
    aux_k_coef : float, default=1/8
        Weight of the auxiliary loss, ``>= 0``. Gao et al. use 1/32; the
        larger default revives dead latents sooner (chosen on the
        dictionary-recovery run of ``benchmarks/bench_defaults.py``), and
        where no latent is dead the auxiliary loss is zero.
    k_mode : {'row', 'batch'}, default='row'
        How the ``k`` are counted in training. 'row': every sample keeps its
        ``k`` largest pre-activations. 'batch': BatchTopK (Bussmann et al.
        2024), the ``k * batch_size`` largest of the whole batch, so a
        sample that needs more atoms takes them from one that needs fewer
        (up to ``4 * k`` in a sample); training also follows the smallest
        kept activation, and ``transform`` keeps every pre-activation above
        that ``threshold_``, sample by sample, for about ``k`` codes per
        sample on average. Only with ``encoder='linear'``.
    encoder : {'linear', 'mp', 'omp'}, default='linear'
        'linear': codes from one product with the encoder weights, as in
        every other estimator. 'mp': ``k`` steps of matching pursuit against
        the dictionary itself (the MP-SAE of Costa et al. 2025): each step
        takes the atom whose correlation with what the previous steps left
        of the sample is largest in absolute value, codes it by that
        correlation, and subtracts it. Codes are then signed, an atom
        serving both polarities of its pattern, and an atom picked twice
        adds its codes. Slower by about a factor ``k`` per sample, and far
        better at reconstruction for a given ``k`` on data whose atoms
        overlap, such as image patches. 'omp': orthogonal matching
        pursuit, which after each step refits the codes of every atom picked
        so far by least squares; better again at the same ``k``, at a cost
        that grows as ``k**2`` per sample. ``aux_k`` does not apply to
        either.
    matryoshka_sizes : tuple of int, default=None
        Matryoshka dictionaries (Bussmann, Nabeshima et al. 2025): for each
        size ``m`` (increasing, at most ``n_components``), the loss adds the
        reconstruction error of the codes of the first ``m`` atoms alone,
        so that the first ``m`` atoms form a usable smaller model, coarse
        features first. :meth:`truncate` cuts a fitted model to a prefix.
        ``transform`` is unchanged.
    sparse_output : bool, default=False
        Return :meth:`transform`'s codes as a ``scipy.sparse`` CSR matrix
        of the non-zero codes (at most ``k`` a sample, sorted by latent)
        instead of a dense array. For wide dictionaries: a million samples
        of 32768 latents take 131 GB as a dense float32 array and 0.26 GB
        as CSR at ``k=32``, and transform skips writing the zeros.
        ``inverse_transform`` takes either.
    normalize_input : bool, default=False
        Scale the data by one factor so that the training rows' mean squared
        norm is ``n_features``, as Gao et al. do for activations, so that
        ``learning_rate`` suits data of any scale. ``transform`` applies the
        same factor and ``inverse_transform`` undoes it; ``input_scale_``
        holds it.
    %(dictionary_parameters)s
    learning_rate : float or 'auto', default='auto'
        Adam's peak step size. ``'auto'``: 1e-2 up to 256 latents, then
        falling as ``1 / sqrt(n_components)`` (5e-3 at 1024, 2.5e-3 at
        4096), the scaling Gao et al. (2024) found for top-k autoencoders;
        wider dictionaries at 1e-2 leave more latents dead.
    %(training_parameters)s

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Dictionary atoms (the decoder's rows), each of unit L2 norm.
    activation_frequency_ : ndarray of shape (n_components,)
        Fraction of training rows on which each latent is non-zero, as the
        steps of the last epoch of ``fit`` saw them (so the model costs no
        pass of its own after training; measured with the kept weights
        where these are an earlier epoch's) and during the pass of the last
        ``partial_fit``. Zeros are dead latents.
    input_scale_ : float
        The factor applied to the input: 1 unless ``normalize_input``.
    threshold_ : float
        With ``k_mode='batch'``, the activation above which ``transform``
        keeps a code (in the scaled units of ``normalize_input``); NaN
        otherwise.
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
    .. [3] B. Bussmann, P. Leask and N. Nanda, "BatchTopK Sparse
       Autoencoders", arXiv:2412.06410, 2024.
    .. [4] V. Costa et al., "From Flat to Hierarchical: Extracting Sparse
       Representations with Matching Pursuit", arXiv:2506.03093, 2025.
    .. [5] B. Bussmann, N. Nabeshima et al., "Learning Multi-Level Features
       with Matryoshka Sparse Autoencoders", arXiv:2503.17547, 2025.

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

    _sparsity_kind = "topk"
    _run_free_parameters = BaseSparseAutoencoder._run_free_parameters | {
        "sparse_output"
    }

    _parameter_constraints: dict = {
        **BaseSparseAutoencoder._parameter_constraints,
        **DICTIONARY_CONSTRAINTS,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "k": [Interval(Integral, 1, None, closed="left")],
        "aux_k": [StrOptions({"auto"}), Interval(Integral, 0, None, closed="left")],
        "aux_k_coef": [Interval(Real, 0, None, closed="left")],
        "learning_rate": [
            Interval(Real, 0, None, closed="neither"),
            StrOptions({"auto"}),
        ],
        "normalize_input": ["boolean"],
        "k_mode": [StrOptions({"row", "batch"})],
        "encoder": [StrOptions({"linear", "mp", "omp"})],
        "matryoshka_sizes": ["array-like", None],
        "sparse_output": ["boolean"],
    }

    def __init__(
        self,
        n_components=128,
        k=16,
        *,
        dictionary="free",
        relaxation=0.1,
        aux_k="auto",
        aux_k_coef=1 / 8,
        k_mode="row",
        encoder="linear",
        matryoshka_sizes=None,
        sparse_output=False,
        normalize_input=False,
        learning_rate="auto",
        learning_rate_schedule="cosine",
        warmup=0.05,
        batch_size=1024,
        max_iter="auto",
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

    def __setstate__(self, state: dict) -> None:
        # Models pickled before k_mode, encoder and matryoshka_sizes existed.
        defaults = {
            "k_mode": "row",
            "encoder": "linear",
            "matryoshka_sizes": None,
            "sparse_output": False,
        }
        super().__setstate__(defaults | state)

    def _check_params(self) -> None:
        if self.k > self.n_components:
            raise ValueError(
                f"k={self.k} must be at most n_components={self.n_components}: "
                "a sample cannot use more atoms than the dictionary has."
            )
        if self.encoder != "linear" and self.k_mode == "batch":
            raise ValueError(
                "k_mode='batch' needs encoder='linear': matching pursuit takes "
                "k atoms per sample, one step at a time."
            )
        self._prefix_sizes()

    def _prefix_sizes(self) -> tuple[int, ...]:
        """``matryoshka_sizes`` checked, without the whole dictionary."""
        if self.matryoshka_sizes is None:
            return ()
        sizes = np.asarray(self.matryoshka_sizes)
        if (
            sizes.ndim != 1
            or len(sizes) == 0
            or not np.issubdtype(sizes.dtype, np.integer)
            or np.any(np.diff(sizes) <= 0)
            or sizes[0] < 1
            or sizes[-1] > self.n_components
        ):
            raise ValueError(
                f"matryoshka_sizes={self.matryoshka_sizes!r} must be increasing "
                f"integers from 1 to n_components={self.n_components}."
            )
        return tuple(int(m) for m in sizes if m < self.n_components)

    def _update_module(self, module) -> None:
        module.rule = self._rule()
        module.aux_k = self._aux_k(module.W_dec.shape[1])
        module.aux_k_coef = self.aux_k_coef
        module.encoder = self.encoder
        module.k_mode = self.k_mode
        module.matryoshka_sizes = self._prefix_sizes()

    def _architecture(self) -> dict:
        # The input scale is fixed when the model starts.
        return {**super()._architecture(), "normalize_input": self.normalize_input}

    def _set_fitted_state(self, module, optimizer, dtype, history, incremental):
        super()._set_fitted_state(module, optimizer, dtype, history, incremental)
        self.input_scale_ = module.input_scale
        batch = module.encoder == "linear" and module.k_mode == "batch"
        self.threshold_ = float(module.threshold) if batch else math.nan

    # ------------------------------------------------------------- inference

    def transform(self, X):
        """Encode X into sparse codes.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        codes : ndarray or scipy.sparse.csr_matrix of shape \
                (n_samples, n_components)
            The codes, in X's float dtype: a CSR matrix of the non-zero
            codes with ``sparse_output``, else a dense array.
        """
        if not self.sparse_output:
            return super().transform(X)
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        dtype = _output_dtype(X.dtype)
        # The linear top-k encoder works through large batches a 16 MiB
        # chunk at a time, only (batch, k) results outliving a chunk: fewer
        # batches, fewer small matrices to stack. The others build (batch,
        # n_components) matrices, and keep the usual batches.
        linear_top_k = self.k_mode == "row" and self.encoder == "linear"
        rows = 16 * self._inference_batch_rows() if linear_top_k else None
        with self._inference_batches(X, rows) as (module, batches):
            blocks = [_csr_codes(module, x, dtype) for x in batches]
        return sp.vstack(blocks, format="csr")

    def _activation_count(self, n_rows: int, n_features: int, device) -> int:
        if self.encoder == "linear" and device.type == "cpu":
            # On the CPU the linear encoder selects a chunk of rows at a
            # time: only (batch, k) values outlive it. A GPU holds the whole
            # (batch, n_components) product.
            return 2 * n_rows * self.k
        return super()._activation_count(n_rows, n_features, device)

    def _training_magnitude_limit(self) -> float:
        if self.normalize_input:
            # The module scales rows to a mean squared norm of n_features
            # before any square is taken: only float32's range binds.
            return float(np.finfo(np.float32).max) / 10
        return super()._training_magnitude_limit()

    @property
    def _auto_steps(self) -> int:
        # Measured (benchmarks/bench_defaults.py): a pursuit's codes are
        # fit at every step, and its dictionary settles in a third of the
        # steps a linear encoder's needs.
        return 500 if self.encoder in ("mp", "omp") else 1500

    def _learning_rate(self) -> float:
        if self.learning_rate != "auto":
            return self.learning_rate
        return AUTO_LEARNING_RATE * min(1.0, math.sqrt(256 / self.n_components))

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
            aux_k_coef=self.aux_k_coef,
            encoder=self.encoder,
            k_mode=self.k_mode,
            matryoshka_sizes=self._prefix_sizes(),
        )

    def _adapt_to_data(self, module, *, mean_squared_norm, epoch_rows) -> None:
        # Dead means silent for 10M rows (Gao et al.) or a whole epoch.
        module.dead_after = min(10_000_000, epoch_rows or 10_000_000)
        if self.normalize_input and mean_squared_norm > 0:
            scale = math.sqrt(module.W_dec.shape[1] / mean_squared_norm)
            module.input_scale = scale
            with torch.no_grad():
                module.b_dec.mul_(scale)

    def truncate(self, n_components):
        """A copy of the fitted model that keeps its first ``n_components`` atoms.

        With ``matryoshka_sizes``, the model was trained so that each listed
        prefix works on its own; the prefix of any other model is merely its
        first atoms. The copy keeps ``k`` (at most ``n_components``), codes
        with the prefix's encoder alone, and is fitted: it transforms,
        scores and continues training like any fitted model, with a fresh
        optimizer.

        Parameters
        ----------
        n_components : int
            Number of atoms to keep, from 1 to the fitted ``n_components``.

        Returns
        -------
        truncated : KSparseAutoencoder
            The smaller model; this one is unchanged.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skae import KSparseAutoencoder
        >>> X = load_digits().data / 16
        >>> sae = KSparseAutoencoder(64, k=8, matryoshka_sizes=(16, 32),
        ...                          max_iter=10, random_state=0).fit(X)
        >>> small = sae.truncate(16)
        >>> small.transform(X).shape
        (1797, 16)
        """
        check_is_fitted(self)
        width = self.components_.shape[0]
        integer = isinstance(n_components, Integral) and not isinstance(
            n_components, bool
        )
        if not integer or not 1 <= n_components <= width:
            raise ValueError(
                f"n_components={n_components!r} must be an integer from 1 to the "
                f"fitted model's {width}."
            )
        sizes = [m for m in self._prefix_sizes() if m < n_components]
        truncated = clone(self).set_params(
            n_components=n_components,
            k=min(self.k, n_components),
            matryoshka_sizes=tuple(sizes) or None,
        )
        for name, value in vars(self).items():
            if name.endswith("_") and name != "module_" and not name.startswith("__"):
                setattr(truncated, name, copy.deepcopy(value))
        truncated.module_ = self.module_.truncated(n_components)
        truncated.components_ = self.components_[:n_components].copy()
        truncated.activation_frequency_ = self.activation_frequency_[
            :n_components
        ].copy()
        truncated.n_dead_components_ = int(np.sum(truncated.activation_frequency_ == 0))
        truncated._fitted_architecture = truncated._architecture()
        truncated._random_state = copy.deepcopy(self._random_state)
        return truncated


def _csr_codes(module: TopKAutoencoder, x: torch.Tensor, dtype) -> sp.csr_matrix:
    """The codes of a batch as a CSR matrix in ``dtype``, without the dense
    (batch, n_components) codes where the encoder gives the kept latents."""
    kept = module.kept_codes(x)
    if kept is None:  # BatchTopK: however many pass the threshold
        return sp.csr_matrix(module.encode(x).cpu().numpy().astype(dtype, copy=False))
    indices, order = kept.indices.sort(dim=1)
    values = kept.values.gather(1, order)
    n_rows, n_kept = values.shape
    codes = sp.csr_matrix(
        (
            values.cpu().numpy().astype(dtype, copy=False).ravel(),
            indices.cpu().numpy().astype(np.int32).ravel(),
            np.arange(0, n_rows * n_kept + 1, n_kept),
        ),
        shape=(n_rows, module.n_components),
    )
    codes.sum_duplicates()  # matching pursuit may pick an atom twice
    codes.eliminate_zeros()  # kept latents that the ReLU set to zero
    return codes
