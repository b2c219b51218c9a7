"""Scaling out on existing engines: hyperparameter search on a dask cluster."""

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from skae import KSparseAutoencoder


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("dask.distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_grid_search_on_a_dask_cluster_matches_the_local_search(dask_client):
    X = np.random.RandomState(0).randn(240, 10).astype(np.float32)
    grid = {"k": [1, 3, 6]}
    estimator = KSparseAutoencoder(n_components=12, max_iter=3, random_state=0)
    local = GridSearchCV(estimator, grid, cv=2).fit(X)
    distributed = pytest.importorskip("dask.distributed")
    with distributed.get_task_stream(dask_client) as tasks:
        with joblib.parallel_backend("dask"):
            remote = GridSearchCV(estimator, grid, cv=2, n_jobs=-1).fit(X)
    # The fits ran as tasks on the cluster's worker processes.
    assert tasks.data
    assert {task["worker"] for task in tasks.data} <= set(dask_client.nthreads())
    # Seeded CPU fits are bitwise reproducible, so the scores match exactly.
    np.testing.assert_array_equal(
        remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert remote.best_params_ == local.best_params_
    np.testing.assert_array_equal(remote.transform(X), local.transform(X))
