"""SparseAutoencoderOutlierDetector: scikit-learn's checks, thresholds,
detection quality, grid search and errors."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.metrics import make_scorer, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from skae import (
    KSparseAutoencoder,
    L1SparseAutoencoder,
    SparseAutoencoderOutlierDetector,
)


def small_ksparse(**params):
    """A model that fits tiny data in a fraction of a second."""
    return KSparseAutoencoder(
        **{"n_components": 8, "k": 2, "max_iter": 5, "random_state": 0, **params}
    )


# The checks fit hundreds of times on tiny data: small inner models, few
# epochs. One detector with 'auto' and one with a float contamination, as the
# outlier checks treat the two differently. The checks seed only the
# detector's own random_state, which it does not have: the inner models are
# seeded here, or fit_predict and fit().predict() would differ.
# The checks fit a few steps on a few dozen rows, far from a trained model:
# that it then reconstructs worse than the mean is true, and not what they check.
@pytest.mark.filterwarnings("ignore:.*explained variance:RuntimeWarning")
@parametrize_with_checks(
    [
        SparseAutoencoderOutlierDetector(small_ksparse(k=1)),
        SparseAutoencoderOutlierDetector(
            L1SparseAutoencoder(n_components=8, max_iter=5, random_state=0),
            contamination=0.1,
        ),
    ]
)
def test_sklearn_compatible_detector(estimator, check):
    check(estimator)


@pytest.fixture
def gaussian_X():
    return np.random.RandomState(0).normal(size=(300, 5))


@pytest.mark.parametrize("contamination", [0.01, 0.1, 0.25, 0.5])
def test_float_contamination_flags_that_share_of_training_rows(
    gaussian_X, contamination
):
    detector = SparseAutoencoderOutlierDetector(
        small_ksparse(), contamination=contamination
    ).fit(gaussian_X)
    labels = detector.predict(gaussian_X)
    scores = detector.score_samples(gaussian_X)
    assert set(np.unique(labels)) == {-1, 1}
    # 300 * contamination is a whole number of rows; the scores have no ties.
    assert len(np.unique(scores)) == len(scores)
    assert np.sum(labels == -1) == round(300 * contamination)
    # The outliers are exactly the worst-reconstructed rows.
    worst = np.argsort(scores)[: round(300 * contamination)]
    assert np.all(labels[worst] == -1)


def test_decision_function_is_scores_minus_offset(gaussian_X):
    detector = SparseAutoencoderOutlierDetector(small_ksparse()).fit(gaussian_X)
    X_new = gaussian_X[:50] * 2
    scores = detector.score_samples(X_new)
    np.testing.assert_array_equal(scores, detector.estimator_.score_samples(X_new))
    np.testing.assert_allclose(
        detector.decision_function(X_new), scores - detector.offset_
    )
    assert isinstance(detector.offset_, float)
    assert detector.offset_ < 0  # minus a squared error
    np.testing.assert_array_equal(
        detector.predict(X_new),
        np.where(detector.decision_function(X_new) >= 0, 1, -1),
    )


def test_auto_contamination_is_tukeys_fence_on_distances(gaussian_X):
    detector = SparseAutoencoderOutlierDetector(small_ksparse()).fit(gaussian_X)
    distances = np.sqrt(-detector.score_samples(gaussian_X))
    q1, q3 = np.percentile(distances, [25, 75])
    assert detector.offset_ == pytest.approx(-((q3 + 1.5 * (q3 - q1)) ** 2))
    flagged = detector.predict(gaussian_X) == -1
    np.testing.assert_array_equal(flagged, distances > q3 + 1.5 * (q3 - q1))
    # Clean Gaussian rows: a few beyond the fence, far fewer than a 10% rule.
    assert 0 < flagged.mean() < 0.05


def test_auto_contamination_is_robust_to_a_few_outliers(gaussian_X):
    X = gaussian_X.copy()
    X[:6] += 20  # 2% far away
    detector = SparseAutoencoderOutlierDetector(small_ksparse()).fit(X)
    labels = detector.predict(X)
    assert np.all(labels[:6] == -1)
    assert np.mean(labels[6:] == -1) < 0.05


def test_auto_contamination_needs_negative_squared_errors():
    from sklearn.decomposition import PCA

    # PCA's score_samples is a log-likelihood, positive on concentrated data.
    X = np.random.RandomState(0).normal(scale=0.01, size=(100, 3))
    with pytest.raises(ValueError, match="float contamination"):
        SparseAutoencoderOutlierDetector(PCA()).fit(X)
    detector = SparseAutoencoderOutlierDetector(PCA(), contamination=0.1).fit(X)
    assert np.sum(detector.predict(X) == -1) == 10


@pytest.fixture(scope="module")
def digit_split(digits):
    """Digits other than 0 as normal rows: a training split of them only,
    and a test split of normal rows plus every 0, labelled 1 / -1."""
    X, y = digits
    normal = y != 0
    X_train, X_normal_test = train_test_split(X[normal], test_size=0.3, random_state=0)
    X_test = np.vstack([X_normal_test, X[~normal]])
    labels = np.r_[np.ones(len(X_normal_test)), -np.ones(np.sum(~normal))]
    return X_train, X_test, labels


def pca_error_auc(X_train, X_test, labels, n_components):
    """ROC AUC of PCA's reconstruction error as the outlier score."""
    pca = PCA(n_components).fit(X_train)
    error = ((X_test - pca.inverse_transform(pca.transform(X_test))) ** 2).sum(1)
    return roc_auc_score(labels, -error)


def test_detects_a_held_out_digit(digit_split):
    X_train, X_test, labels = digit_split
    detector = SparseAutoencoderOutlierDetector(
        KSparseAutoencoder(
            n_components=64,
            k=8,
            max_iter=10,
            batch_size=256,
            learning_rate=3e-3,
            learning_rate_schedule="constant",
            random_state=0,
        )
    ).fit(X_train)
    auc = roc_auc_score(labels, detector.decision_function(X_test))
    # PCA's reconstruction error, at its best size, is the baseline: measured
    # 0.853, 0.937 and 0.879 with 4, 8 and 16 components, and the
    # autoencoder's 0.951 to 0.967 over random_state 0-4 (0.954 with 0).
    best_pca = max(pca_error_auc(X_train, X_test, labels, n) for n in (4, 8, 16))
    assert auc > best_pca
    # 'auto' flagged 42% to 59% of the zeros and 2.5% to 3.3% of the normal
    # test digits over the same seeds.
    flagged = detector.predict(X_test) == -1
    assert flagged[labels == -1].mean() > 0.3
    assert flagged[labels == 1].mean() < 0.06


def test_grid_search_with_a_supervised_scorer(digits):
    # Unsupervised fits, supervised choice: every fold trains on its rows,
    # anomalies included, and is scored by ROC AUC against the labels.
    X, y = digits
    rng = np.random.RandomState(0)
    normal = rng.choice(np.flatnonzero(y != 7), 200, replace=False)
    anomalous = rng.choice(np.flatnonzero(y == 7), 10, replace=False)
    X_small = X[np.r_[normal, anomalous]]
    labels = np.r_[np.ones(200, dtype=int), -np.ones(10, dtype=int)]
    detector = SparseAutoencoderOutlierDetector(
        small_ksparse(n_components=16, max_iter=20)
    )
    # An outlier detector gets KFold by default: with the anomalies last,
    # some folds would hold no anomaly and their AUC would be undefined.
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(
        detector,
        {"estimator__k": [1, 4]},
        scoring=make_scorer(roc_auc_score, response_method="decision_function"),
        cv=folds,
    ).fit(X_small, labels)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 2
    assert np.all(np.isfinite(scores))
    best_k = search.best_params_["estimator__k"]
    assert best_k == (1, 4)[int(np.argmax(scores))]
    assert search.best_estimator_.estimator_.k == best_k
    assert search.best_estimator_.estimator.k == best_k
    assert detector.estimator.k == 2  # the searched detector is untouched
    # The baseline: distance to the training rows' mean, on the same folds.
    # Measured 0.883; the autoencoders 0.918 (k=1) and 0.945 (k=4), and
    # 0.866 and 0.845 left untrained.
    trivial = np.mean(
        [
            roc_auc_score(
                labels[test], -((X_small[test] - X_small[train].mean(0)) ** 2).sum(1)
            )
            for train, test in folds.split(X_small, labels)
        ]
    )
    assert search.best_score_ > trivial + 0.03
    assert search.predict(X_small).shape == (210,)


def test_the_passed_estimator_is_not_modified(gaussian_X):
    sae = small_ksparse()
    before = sae.get_params()
    detector = SparseAutoencoderOutlierDetector(sae).fit(gaussian_X)
    assert detector.estimator is sae
    assert detector.estimator_ is not sae
    assert sae.get_params() == before
    with pytest.raises(NotFittedError):
        check_is_fitted(sae)
    check_is_fitted(detector.estimator_)


# 16 codes a row for 5 features, 60 rows: the default model is not meant for
# this data, and says so; the test checks only which model it is.
@pytest.mark.filterwarnings("ignore:.*explained variance:RuntimeWarning")
def test_default_estimator_is_a_ksparse_autoencoder(gaussian_X):
    detector = SparseAutoencoderOutlierDetector()
    assert detector.estimator is None
    detector.fit(gaussian_X[:60])
    assert type(detector.estimator_) is KSparseAutoencoder
    assert detector.estimator_.get_params() == KSparseAutoencoder().get_params()
    assert detector.estimator is None


def test_refit_does_not_reuse_the_fitted_clone(gaussian_X):
    detector = SparseAutoencoderOutlierDetector(small_ksparse()).fit(gaussian_X)
    first = detector.estimator_
    detector.fit(gaussian_X[:, :3])
    assert detector.estimator_ is not first
    assert detector.n_features_in_ == 3


def test_failed_fit_leaves_the_fitted_detector_as_it_was(gaussian_X):
    detector = SparseAutoencoderOutlierDetector(small_ksparse()).fit(gaussian_X)
    fitted, offset = detector.estimator_, detector.offset_
    bad = gaussian_X[:, :3].copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detector.fit(bad)
    assert detector.estimator_ is fitted
    assert detector.offset_ == offset
    assert detector.n_features_in_ == 5


@pytest.mark.parametrize("contamination", [0.0, 0.6, -0.1, 1.0, "legacy"])
def test_bad_contamination_is_a_clear_value_error(gaussian_X, contamination):
    detector = SparseAutoencoderOutlierDetector(
        small_ksparse(), contamination=contamination
    )
    with pytest.raises(ValueError, match=r"'contamination' parameter .*\(0.0, 0.5\]"):
        detector.fit(gaussian_X)
    assert not hasattr(detector, "estimator_")


def test_an_estimator_without_score_samples_is_refused_at_fit(gaussian_X):
    detector = SparseAutoencoderOutlierDetector(LinearRegression())
    with pytest.raises(ValueError, match="implementing 'fit' and 'score_samples'"):
        detector.fit(gaussian_X)
    with pytest.raises(TypeError, match="score_samples"):
        detector.fit(gaussian_X)


def test_inner_parameters_are_validated(gaussian_X):
    detector = SparseAutoencoderOutlierDetector(small_ksparse(k=0))
    with pytest.raises(ValueError, match="'k' parameter of KSparseAutoencoder"):
        detector.fit(gaussian_X)


def test_wrong_number_of_features_names_the_detector(gaussian_X):
    detector = SparseAutoencoderOutlierDetector(small_ksparse()).fit(gaussian_X)
    with pytest.raises(ValueError, match="SparseAutoencoderOutlierDetector is exp"):
        detector.predict(gaussian_X[:, :4])


def test_feature_names_are_recorded(gaussian_X):
    frame = pd.DataFrame(gaussian_X, columns=[f"f{i}" for i in range(5)])
    detector = SparseAutoencoderOutlierDetector(small_ksparse()).fit(frame)
    np.testing.assert_array_equal(detector.feature_names_in_, frame.columns)
    assert detector.n_features_in_ == 5
    assert detector.predict(frame).shape == (300,)


def test_float32_scores_stay_float32(gaussian_X):
    X = gaussian_X.astype(np.float32)
    detector = SparseAutoencoderOutlierDetector(small_ksparse(), contamination=0.1).fit(
        X
    )
    assert detector.score_samples(X).dtype == np.float32
    assert detector.decision_function(X).dtype == np.float32
    assert detector.predict(X).dtype.kind == "i"


def test_tags():
    detector = SparseAutoencoderOutlierDetector(small_ksparse())
    tags = get_tags(detector)
    assert tags.estimator_type == "outlier_detector"
    assert tags.input_tags.sparse  # as skae's estimators
    assert not tags.input_tags.allow_nan
    assert tags.transformer_tags is None
    assert get_tags(clone(detector)).input_tags == tags.input_tags


def test_sparse_input(gaussian_X):
    X = sparse.random(200, 10, density=0.2, format="csr", random_state=0)
    detector = SparseAutoencoderOutlierDetector(small_ksparse(), contamination=0.1).fit(
        X
    )
    np.testing.assert_allclose(
        detector.score_samples(X), detector.score_samples(X.toarray()), rtol=1e-6
    )


def test_a_feature_name_mismatch_warns_once(gaussian_X):
    import warnings

    frame = pd.DataFrame(gaussian_X, columns=[f"f{i}" for i in range(5)])
    detector = SparseAutoencoderOutlierDetector(small_ksparse()).fit(frame)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector.predict(gaussian_X)
    messages = [str(w.message) for w in caught if "feature names" in str(w.message)]
    assert len(messages) == 1
    assert "SparseAutoencoderOutlierDetector" in messages[0]
