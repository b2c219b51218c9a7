"""skae inside scikit-learn's tools: Pipeline, GridSearchCV, partial_fit."""

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skae import KSparseAutoencoder


def test_pipeline_with_kmeans_clusters_digits(digits):
    X, y = digits

    def clusters(*steps):
        kmeans = KMeans(n_clusters=10, n_init=10, random_state=0)
        return adjusted_rand_score(y, make_pipeline(*steps, kmeans).fit_predict(X))

    params = {"n_components": 64, "k": 8, "max_iter": 30, "random_state": 0}
    trained = clusters(KSparseAutoencoder(**params))
    # The same model left at its initial weights: a learning rate of 1e-12.
    untrained = clusters(KSparseAutoencoder(**params, learning_rate=1e-12))
    raw = clusters()
    # Measured 0.626 trained, 0.461 untrained and 0.666 on the 64 raw pixels:
    # codes with 8 of 64 values set keep most of the pixels' digit structure,
    # and training is what keeps it.
    assert trained > untrained + 0.1
    assert trained > 0.9 * raw


def test_grid_search_over_k_in_two_processes(sparse_data):
    search = GridSearchCV(
        KSparseAutoencoder(n_components=32, max_iter=20, random_state=0),
        {"k": [1, 3, 8]},
        cv=3,
        n_jobs=2,
    )
    search.fit(sparse_data)
    scores = search.cv_results_["mean_test_score"]
    # score() is explained variance: more active atoms reconstruct better.
    assert scores[0] < scores[1] < scores[2]
    assert search.best_params_ == {"k": 8}
    assert search.best_estimator_.transform(sparse_data).shape == (len(sparse_data), 32)


def test_partial_fit_over_chunks_reaches_the_quality_of_fit(sparse_data):
    params = {"n_components": 64, "k": 3, "random_state": 0}
    full = KSparseAutoencoder(max_iter=30, tol=0, **params).fit(sparse_data)
    streamed = KSparseAutoencoder(**params)
    for _ in range(30):
        for chunk in np.array_split(sparse_data, 4):
            streamed.partial_fit(chunk)
    assert streamed.n_iter_ == 120
    assert len(streamed.loss_curve_) == 120
    assert streamed.score(sparse_data) > full.score(sparse_data) - 0.02
    assert streamed.activation_frequency_.shape == (64,)
