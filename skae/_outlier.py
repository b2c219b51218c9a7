"""SparseAutoencoderOutlierDetector: reconstruction error as an outlier score."""

from __future__ import annotations

import copy
import warnings
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._ksparse import KSparseAutoencoder

# Tukey's fences: a value more than 1.5 interquartile ranges beyond the
# quartiles lies outside the whiskers of a box plot (Tukey, 1977).
_FENCE_IQRS = 1.5


class SparseAutoencoderOutlierDetector(OutlierMixin, BaseEstimator):
    """Outlier detection by the reconstruction error of a sparse autoencoder.

    A sparse autoencoder fit on mostly normal data reconstructs rows like
    them well and unfamiliar rows worse. This meta-estimator fits a clone of
    ``estimator``, scores every row by its negative squared reconstruction
    error (the estimator's ``score_samples``, higher is more normal) and
    turns the score into labels with a threshold on the training scores, the
    way :class:`~sklearn.ensemble.IsolationForest` does: +1 for inliers, -1
    for outliers.

    Parameters
    ----------
    estimator : estimator object, default=None
        The autoencoder whose reconstruction error scores the rows: any skae
        estimator, such as :class:`KSparseAutoencoder` or
        :class:`L1SparseAutoencoder`. None means ``KSparseAutoencoder()``
        with its defaults. It is cloned in :meth:`fit` and never modified;
        set its ``random_state`` for reproducible fits, as the detector has
        none of its own. Any estimator with ``fit`` and ``score_samples``
        (higher for more normal rows) works with a float ``contamination``.
    contamination : 'auto' or float, default='auto'
        The share of outliers expected in the training data; it sets the
        threshold ``offset_`` on the training scores.

        - float in (0, 0.5]: ``offset_`` is the ``100 * contamination``
          percentile of the training scores, so that this fraction of the
          training rows is predicted as outliers (up to ties).
        - 'auto': Tukey's upper fence on the training rows' reconstruction
          distances ``d = ||x - x_hat|| = sqrt(-score_samples)``: a row is an
          outlier when ``d > Q3 + 1.5 * (Q3 - Q1)``, with Q1 and Q3 the
          quartiles of the training distances. See Notes.

    Attributes
    ----------
    estimator_ : estimator object
        The fitted clone of ``estimator``.
    offset_ : float
        The threshold on :meth:`score_samples`: ``decision_function`` is
        ``score_samples - offset_``, and rows scoring below it are outliers.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features,)
        Names of features seen during :meth:`fit`. Defined only when X has
        feature names that are all strings.

    See Also
    --------
    KSparseAutoencoder.score_samples : The negative squared reconstruction
        error this detector thresholds.
    sklearn.ensemble.IsolationForest : Outliers isolated by random splits.
    sklearn.neighbors.LocalOutlierFactor : Outliers by local density.

    Notes
    -----
    The 'auto' rule needs no assumption on the share of outliers. It works
    on distances rather than on squared errors because squared errors are
    strongly right-skewed, and a fence on them would flag several percent of
    clean rows; on normally distributed distances it flags 0.7% of the rows,
    and on the clean data sets of skae's tests and benchmarks it flagged
    0.3% to 6% of the training rows. Quartiles are robust, so a minority of
    outliers in the training data moves the fence little, and the rule is
    deterministic given the fitted model. It reads ``score_samples`` as a
    negative squared error, as every skae estimator returns it; an estimator
    with positive scores needs a float ``contamination``.

    Either threshold comes from the training rows, which the autoencoder
    reconstructs better than rows it has not seen: expect a larger share of
    new normal rows to be flagged than of the training rows, the more so the
    larger the model is relative to the data.

    ``fit`` ignores labels, so for novelty detection fit on normal rows
    only. To tune the autoencoder when some rows are labelled, grid-search
    it with a supervised scorer on :meth:`decision_function`, such as
    ``make_scorer(roc_auc_score, response_method="decision_function")``
    with labels 1 for inliers and -1 for outliers.

    Reconstruction errors depend on the scale of each feature: standardize
    the data, for example in a :func:`~sklearn.pipeline.make_pipeline` with a
    :class:`~sklearn.preprocessing.StandardScaler`, unless its features
    share a scale.

    References
    ----------
    .. [1] J. W. Tukey, "Exploratory Data Analysis", Addison-Wesley, 1977.

    Examples
    --------
    >>> import numpy as np
    >>> from skae import KSparseAutoencoder, SparseAutoencoderOutlierDetector
    >>> X = np.random.RandomState(0).normal(size=(200, 4))
    >>> sae = KSparseAutoencoder(n_components=8, k=2, max_iter=5, random_state=0)
    >>> detector = SparseAutoencoderOutlierDetector(sae, contamination=0.05)
    >>> detector.fit(X).predict([[0.0, 0.0, 0.0, 0.0], [8.0, -8.0, 8.0, -8.0]])
    array([ 1, -1])
    >>> float(np.mean(detector.predict(X) == -1))
    0.05
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "score_samples"]), None],
        "contamination": [
            StrOptions({"auto"}),
            Interval(Real, 0, 0.5, closed="right"),
        ],
    }

    def __init__(self, estimator=None, *, contamination="auto"):
        self.estimator = estimator
        self.contamination = contamination

    def _template(self):
        """The estimator to clone: ``estimator``, or the default one."""
        return KSparseAutoencoder() if self.estimator is None else self.estimator

    @_fit_context(
        # The inner estimator's parameters are validated by its own fit.
        prefer_skip_nested_validation=False
    )
    def fit(self, X, y=None):
        """Fit a clone of ``estimator`` on X and set the threshold.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data, mostly normal. The inner estimator validates it
            before it trains: non-finite values, too few rows and wrong
            dtypes raise a ``ValueError`` or ``TypeError``.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The fitted detector.
        """
        _check_shape(X, self)
        estimator = clone(self._template())
        estimator.fit(X)
        offset = self._offset(estimator.score_samples(X))
        # Recorded only now, so that a failed fit leaves a fitted detector
        # as it was.
        validate_data(self, X, skip_check_array=True)
        self.estimator_ = estimator
        self.offset_ = offset
        return self

    def _offset(self, scores: np.ndarray) -> float:
        """The threshold on the training rows' scores."""
        if self.contamination == "auto":
            return _tukey_offset(scores)
        return float(np.percentile(scores, 100.0 * self.contamination))

    def score_samples(self, X):
        """Negative squared reconstruction error of each row.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Rows to score.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            ``estimator_.score_samples(X)``: higher is more normal.
        """
        check_is_fitted(self)
        _check_shape(X, self, reset=False)
        with warnings.catch_warnings():
            # The detector has just checked X's feature names: one warning.
            warnings.filterwarnings("ignore", message="X does not have valid feature")
            warnings.filterwarnings("ignore", message="X has feature names")
            return self.estimator_.score_samples(X)

    def decision_function(self, X):
        """Score of each row relative to the threshold.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Rows to score.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
            ``score_samples(X) - offset_``: negative for outliers, zero or
            positive for inliers.
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Label each row as an inlier (+1) or an outlier (-1).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Rows to label.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            1 where ``decision_function(X) >= 0``, else -1.
        """
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self._template())
        # The inner estimator reads X, so it says what X may be (sparse,
        # NaN or not, ...) and whether fitting is deterministic.
        tags.input_tags = copy.deepcopy(inner.input_tags)
        tags.non_deterministic = inner.non_deterministic
        return tags


def _check_shape(X, detector, reset: bool = True) -> None:
    """Check that X is a non-empty 2-D table, and with ``reset=False`` that it
    has the fitted features, before any work.

    X itself goes on to the inner estimator unconverted, so that it checks
    the values and a memmap stays a memmap, which it streams from disk.
    """
    if reset:
        check_array(X, accept_sparse=True, dtype=None, ensure_all_finite=False)
    else:
        validate_data(
            detector,
            X,
            reset=False,
            accept_sparse=True,
            dtype=None,
            ensure_all_finite=False,
        )


def _tukey_offset(scores: np.ndarray) -> float:
    """``-fence**2`` for Tukey's upper fence on the distances
    ``sqrt(-scores)``, with scores read as negative squared errors."""
    squared_errors = -np.asarray(scores, dtype=np.float64)
    if np.any(squared_errors < 0):
        raise ValueError(
            "contamination='auto' reads score_samples as negative squared "
            f"reconstruction errors, but the estimator gave scores up to "
            f"{-squared_errors.min():.4g} > 0. Pass a float contamination in "
            "(0, 0.5] instead."
        )
    q1, q3 = np.percentile(np.sqrt(squared_errors), [25, 75])
    fence = q3 + _FENCE_IQRS * (q3 - q1)
    return -float(fence**2)
