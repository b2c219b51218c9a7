"""ConvSparseAutoencoder: sparse convolutional features of flattened images."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import BaseSparseAutoencoder
from ._docs import fill_doc
from ._engine.modules import ConvAutoencoder
from ._rules import KINDS, Kind


@fill_doc
class ConvSparseAutoencoder(BaseSparseAutoencoder):
    """Convolutional sparse autoencoder for images, one flattened image per row.

    The encoder convolves each image with ``n_components`` filters into
    feature maps of the image's size ('same' padding); the decoder is the
    transposed convolution back to the image. With ``sparsity='wta'`` the maps
    follow Makhzani & Frey's winner-take-all convolutional autoencoders:
    *spatial* sparsity keeps the ``k`` largest activations of every map of
    every image, and during training *lifetime* sparsity also keeps each map
    only on the ``lifetime_sparsity`` share of the batch's images where it
    is strongest. ``'l1'`` and ``'kl'`` apply the penalties of
    :class:`L1SparseAutoencoder` and :class:`KLSparseAutoencoder` to the maps.

    ``transform`` returns the sparse maps flattened, which
    ``inverse_transform`` decodes back into images. With ``pool_size`` it
    max-pools them over ``pool_size`` × ``pool_size`` windows first: fewer
    features for a linear classifier or KMeans, which ``inverse_transform``
    refuses, as pooling keeps a window's largest value and forgets where it
    was (an upsampled guess would be a different, blurred image). Lifetime
    sparsity needs a batch: training keeps a running average of each map's
    lifetime cut, and ``score``, ``score_samples``, early stopping and
    ``activation_frequency_`` apply it image by image, as the decoder
    learned. ``transform`` returns features in the manner of Makhzani &
    Frey's classification experiments: every map's spatial winners, without
    the lifetime cut. With a small ``lifetime_sparsity`` the decoder sees
    few maps per image (under two of 32 at 5%) and reconstructs little
    either way; the default, 1, turns the lifetime cut off.

    Parameters
    ----------
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(height, width, channels)`` of an image; a
        row of X is the image flattened in that (row-major) order. None: a
        square single-channel image when the number of features is a perfect
        square, else a 1-D signal (an image of one row).
    n_components : int, default=32
        Number of filters (feature maps).
    kernel_size : int, default=5
        Odd side of the square filters.
    sparsity : {'wta', 'l1', 'l2', 'kl'}, default='wta'
        Winner-take-all (spatial and lifetime), an atom-norm-weighted L1
        penalty on ReLU maps, a penalty on the norm of each image's whole
        activation (as in :class:`L2SparseAutoencoder`), or sigmoid maps
        with a target mean activation.
    k : int, default=4
        With 'wta': activations kept per map per image.
    lifetime_sparsity : float, default=1.0
        With 'wta': share of a batch's images on which each map is kept
        during training, in (0, 1]; 1 turns lifetime sparsity off. Makhzani
        & Frey use 0.05 to 0.2 for features; it costs reconstruction.
    pool_size : int or None, default=None
        Side of the max-pooling windows of ``transform``; None returns the
        unpooled maps, which ``inverse_transform`` decodes.
    alpha : float, default=0.1
        With 'l1' or 'l2': the penalty's strength, on the scale of one image's
        squared error.
    sparsity_target : float, default=0.05
        With 'kl': ``rho``, the target mean activation of each map.
    sparsity_weight : float, default=3.0
        With 'kl': ``beta``, the weight of the KL penalty, counted once for
        every position of a map (as if each were a unit of
        :class:`KLSparseAutoencoder`), as the L1 penalty sums over positions.
    learning_rate : float, default=1e-2
        Adam's peak step size.
    %(training_parameters)s

    Attributes
    ----------
    components_ : ndarray of shape (n_components, kernel_size**2 * channels)
        The decoder's filters, each flattened as a (kernel_size, kernel_size,
        channels) image, so ``components_[j].reshape(kernel_size,
        kernel_size, -1)`` shows filter ``j``. Unit norm with 'wta'. Along
        an image side shorter than the kernel, filters are cut to
        ``2 * side - 1``: a 1-D signal has filters of one row.
    image_shape_ : tuple of int
        ``(height, width, channels)`` of the images seen in ``fit``.
    activation_frequency_ : ndarray of shape (n_components,)
        Per map: the fraction of training images on which it fires anywhere
        ('wta', after the lifetime cut; 'l1'), or its mean activation ('kl'),
        as the steps of the last epoch of ``fit`` saw it (measured with the
        kept weights where these are an earlier epoch's, or where a lifetime
        cut, which training takes per batch, applies).
    %(fitted_attributes)s

    See Also
    --------
    KSparseAutoencoder : The fully connected k-sparse autoencoder.

    References
    ----------
    .. [1] A. Makhzani and B. Frey, "Winner-Take-All Autoencoders",
       NeurIPS 2015, arXiv:1409.2752.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skae import ConvSparseAutoencoder
    >>> X = load_digits().data / 16
    >>> sae = ConvSparseAutoencoder((8, 8), n_components=16, max_iter=10,
    ...                             random_state=0).fit(X)
    >>> sae.transform(X).shape  # 16 maps of 8 x 8
    (1797, 1024)
    >>> sae.inverse_transform(sae.transform(X)).shape
    (1797, 64)
    >>> sae.set_params(pool_size=2).transform(X).shape  # pooled to 4 x 4
    (1797, 256)
    >>> sae.components_.shape
    (16, 25)
    """

    _parameter_constraints: dict = {
        **BaseSparseAutoencoder._parameter_constraints,
        "image_shape": ["array-like", None],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "kernel_size": [Interval(Integral, 1, None, closed="left")],
        "sparsity": [StrOptions({"wta", "l1", "l2", "kl"})],
        "k": [Interval(Integral, 1, None, closed="left")],
        "lifetime_sparsity": [Interval(Real, 0, 1, closed="right")],
        "pool_size": [Interval(Integral, 1, None, closed="left"), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "sparsity_target": [Interval(Real, 0, 1, closed="neither")],
        "sparsity_weight": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        image_shape=None,
        n_components=32,
        kernel_size=5,
        sparsity="wta",
        k=4,
        lifetime_sparsity=1.0,
        pool_size=None,
        *,
        alpha=0.1,
        sparsity_target=0.05,
        sparsity_weight=3.0,
        learning_rate=1e-2,
        learning_rate_schedule="cosine",
        warmup=0.05,
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

    def _check_params(self) -> None:
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size={self.kernel_size} must be odd, so that the "
                "convolution and its transpose keep the image size."
            )
        if self.image_shape is not None:
            shape = list(self.image_shape)
            if len(shape) not in (2, 3) or not all(
                isinstance(s, Integral | np.integer)
                and not isinstance(s, bool)
                and s >= 1
                for s in shape
            ):
                raise ValueError(
                    "image_shape must be (height, width) or (height, width, "
                    f"channels) of positive integers, got {self.image_shape!r}."
                )

    def _resolve_image_shape(self, n_features: int) -> tuple[int, int, int]:
        if self.image_shape is None:
            side = math.isqrt(n_features)
            return (side, side, 1) if side * side == n_features else (1, n_features, 1)
        shape = tuple(int(s) for s in np.ravel(self.image_shape))
        shape = shape if len(shape) == 3 else (*shape, 1)
        if math.prod(shape) != n_features:
            raise ValueError(
                f"image_shape={self.image_shape!r} holds {math.prod(shape)} values "
                f"per image, but X has {n_features} features per row."
            )
        return shape

    def _validate_X(self, X, *, reset: bool, **kwargs):
        X = super()._validate_X(X, reset=reset, **kwargs)
        if reset:
            self._resolve_image_shape(X.shape[1])
        return X

    def _architecture(self) -> dict:
        shape = {}
        if hasattr(self, "n_features_in_"):
            shape["image_shape"] = self._resolve_image_shape(self.n_features_in_)
        return {
            "n_components": self.n_components,
            "kernel_size": self.kernel_size,
            "sparsity": self.sparsity,
            **shape,
        }

    def _kind(self) -> Kind:
        return KINDS[self.sparsity]

    def _update_module(self, module) -> None:
        module.rule = self._rule()

    def _make_module(self, n_features, mean, generator) -> torch.nn.Module:
        return ConvAutoencoder(
            self._resolve_image_shape(n_features),
            self.kernel_size,
            self.n_components,
            self._rule(),
            mean=mean,
            generator=generator,
            unit_norm_atoms=self.sparsity == "wta",
        )

    def _set_fitted_state(self, module, optimizer, dtype, history, incremental):
        super()._set_fitted_state(module, optimizer, dtype, history, incremental)
        self.image_shape_ = module.image_shape

    # ------------------------------------------------------------- shapes

    def _grid(self) -> tuple[int, int]:
        """Height and width of the maps ``transform`` returns."""
        height, width, _ = self.image_shape_
        if self.pool_size is None:
            return height, width
        return -(-height // self.pool_size), -(-width // self.pool_size)

    @property
    def _n_features_out(self) -> int:
        check_is_fitted(self)
        rows, cols = self._grid()
        return self.module_.n_components * rows * cols

    def _parameter_count(self, n_features: int) -> int:
        _, _, channels = self._resolve_image_shape(n_features)
        kernel = self.kernel_size**2
        return 2 * self.n_components * channels * kernel + self.n_components + channels

    def _activation_count(self, n_rows: int, n_features: int, device) -> int:
        _, _, channels = self._resolve_image_shape(n_features)
        return 2 * n_rows * self.n_components * (n_features // channels)

    def _batch_work(self, n_rows: int, n_features: int) -> int:
        # Every map at every position: more than the convolutions' real work,
        # so that no convolutional model is taken for a small one.
        return 2 * n_rows * n_features * self._decoder_width()

    def _decoder_width(self) -> int:
        """Unpooled code columns; also sizes inference batches during fit."""
        n_maps = self.module_.n_components if hasattr(self, "module_") else None
        height, width, _ = self._resolve_image_shape(self.n_features_in_)
        return (n_maps or self.n_components) * height * width

    # ------------------------------------------------------------ inference

    def transform(self, X):
        """Sparse feature maps of X, max-pooled and flattened.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Flattened images.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components * rows * cols)
            Map ``j`` at pooled position ``(r, c)`` is column
            ``(j * rows + r) * cols + c``; ``rows``, ``cols`` are the image's
            height and width divided by ``pool_size``, rounded up.
        """
        return super().transform(X)

    def _encoder(self):
        self._validate_params()  # pool_size may have been set since fit
        pool = self.pool_size
        return lambda module, x: module.pooled(x, pool)

    def get_feature_names_out(self, input_features=None):
        """Output names: ``<class>_map<j>_y<r>_x<c>`` for map and position.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored; present for API consistency.

        Returns
        -------
        feature_names_out : ndarray of str objects
            One name per column of :meth:`transform`'s output.
        """
        check_is_fitted(self)
        rows, cols = self._grid()
        prefix = type(self).__name__.lower()
        maps, ys, xs = np.meshgrid(
            np.arange(self.module_.n_components),
            np.arange(rows),
            np.arange(cols),
            indexing="ij",
        )
        names = [
            f"{prefix}_map{j}_y{r}_x{c}"
            for j, r, c in zip(maps.ravel(), ys.ravel(), xs.ravel(), strict=True)
        ]
        return np.asarray(names, dtype=object)
