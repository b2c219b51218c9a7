"""Scaling out on existing engines: hyperparameter search on a dask cluster."""

import joblib
import numpy as np
import pytest
from dask import distributed
from sklearn.model_selection import GridSearchCV

from skae import KSparseAutoencoder


@pytest.fixture(scope="module")
def dask_client():
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


def _ddp_worker(rank, world_size, tmp_dir):
    """One process of a 2-process gloo group: fit, then save what the test checks."""
    from pathlib import Path

    import torch
    import torch.distributed as dist

    import skae._base

    tmp = Path(tmp_dir)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp / 'rendezvous'}",
        rank=rank,
        world_size=world_size,
    )
    training_rows = []
    read_batches = skae._base.iter_batches

    def counted(source, chunks, batch_size, device, rng=None, dtype=torch.float32):
        for batch in read_batches(source, chunks, batch_size, device, rng, dtype):
            if rng is not None:  # only training batches are shuffled
                training_rows.append(len(batch))
            yield batch

    skae._base.iter_batches = counted
    X = np.load(tmp / "X.npy")
    sae = KSparseAutoencoder(
        n_components=48,
        k=3,
        max_iter=8,
        batch_size=256,
        early_stopping=True,
        random_state=0,
        device="cpu",
        checkpoint_path=tmp / "run.ckpt",
    ).fit(X)
    np.savez(
        tmp / f"rank{rank}.npz",
        components=sae.components_,
        loss=np.array(sae.loss_curve_),
        validation=np.array(sae.validation_scores_),
        frequency=sae.activation_frequency_,
        rows=sum(training_rows),
        epochs=sae.n_iter_,
        score=sae.score(X),
    )
    dist.destroy_process_group()


def test_ddp_with_two_gloo_processes_trains_one_model(sparse_data, tmp_path):
    import torch.multiprocessing as mp

    X = sparse_data.astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [np.load(tmp_path / f"rank{rank}.npz") for rank in range(2)]
    # Identical weights and histories on both processes.
    for name in ("components", "loss", "validation", "frequency", "score"):
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name])
    # Each process trained on its half of the 1800 training rows per epoch.
    n_train = len(X) - int(np.ceil(0.1 * len(X)))
    for rank in ranks:
        assert rank["rows"] == rank["epochs"] * (n_train // 2)
    # As good as one process trained with the same global batch (each process
    # takes batch_size rows a step), and better than one with half the epochs.
    params = {"n_components": 48, "k": 3, "early_stopping": True, "random_state": 0}
    alone = KSparseAutoencoder(**params, max_iter=8, batch_size=512).fit(X)
    shorter = KSparseAutoencoder(**params, max_iter=4, batch_size=512).fit(X)
    # Measured 0.4551 (two processes), 0.4552 (one) and 0.373 (4 epochs).
    assert abs(ranks[0]["score"] - alone.score(X)) < 0.01
    assert ranks[0]["score"] > shorter.score(X) + 0.05
    assert (tmp_path / "run.ckpt").exists()  # written by rank 0


def _ddp_resume_worker(rank, world_size, tmp_dir, mode):
    """Fit with a gloo group: whole, Ctrl-C at step 7 of epoch 2, or resumed."""
    import warnings
    from pathlib import Path

    import torch.distributed as dist

    import skae._engine.training

    tmp = Path(tmp_dir)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp / f'rendezvous-{mode}'}",
        rank=rank,
        world_size=world_size,
    )
    # Every process counts its training steps; the interrupted run stops all
    # of them at the same step.
    original, steps = skae._engine.training.objective, []

    def counted(module, x):
        if module.training:
            steps.append(1)
            if mode == "interrupted" and len(steps) == 17:  # 10 steps an epoch
                raise KeyboardInterrupt
        return original(module, x)

    skae._engine.training.objective = counted
    X = np.load(tmp / "X.npy")
    # Every other row scaled up, so that the two shards' losses differ.
    X[::2] *= 5
    sae = KSparseAutoencoder(
        n_components=16,
        k=3,
        max_iter=3,
        batch_size=50,
        tol=0.0,
        random_state=0,
        device="cpu",
        checkpoint_path=None if mode == "whole" else tmp / "run.ckpt",
        checkpoint_interval=0.25,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the interruption's
        sae.fit(X)
    np.savez(
        tmp / f"{mode}{rank}.npz",
        loss=np.array(sae.loss_curve_),
        components=sae.components_,
        steps=len(steps),
    )
    dist.destroy_process_group()


def test_ddp_resumes_from_the_middle_of_an_epoch(sparse_data, tmp_path):
    import torch.multiprocessing as mp

    from skae._engine.checkpoint import load_checkpoint

    np.save(tmp_path / "X.npy", sparse_data[:1000].astype(np.float32))
    for mode in ("whole", "interrupted"):
        mp.spawn(_ddp_resume_worker, args=(2, str(tmp_path), mode), nprocs=2)
    saved = load_checkpoint(tmp_path / "run.ckpt").loop
    assert saved.history.n_epochs == 1 and 0 < saved.partial.steps < 7
    mp.spawn(_ddp_resume_worker, args=(2, str(tmp_path), "resumed"), nprocs=2)
    for rank in range(2):
        whole = np.load(tmp_path / f"whole{rank}.npz")
        resumed = np.load(tmp_path / f"resumed{rank}.npz")
        # It trained only the rest of epoch 2, from the last save, and epoch 3.
        assert whole["steps"] == 30
        assert resumed["steps"] == 10 - saved.partial.steps + 10
        # The epoch resumed part-way reports the loss over every process's rows.
        np.testing.assert_allclose(resumed["loss"], whole["loss"], rtol=1e-6)
        np.testing.assert_array_equal(resumed["components"], whole["components"])
    assert len(np.load(tmp_path / "interrupted0.npz")["loss"]) == 1
