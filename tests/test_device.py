"""Devices and thread limits; the CUDA tests skip without a GPU."""

import pickle
import re

import numpy as np
import pytest
import torch
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from skae import KSparseAutoencoder
from skae._engine.device import resolve_device, thread_budget

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_auto_is_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", for_training=True) == torch.device("cpu")


def test_missing_cuda_device_is_a_clear_error():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"device='cuda:{n}' was requested"):
        resolve_device(f"cuda:{n}", for_training=True)


def test_unknown_device_string():
    with pytest.raises(ValueError, match="device='tpu0' is not a device torch knows"):
        resolve_device("tpu0", for_training=True)


def test_torch_threads_follow_threadpoolctl_limits(sparse_data, hook):
    seen = []
    hook(epoch_begin=lambda state: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    with threadpool_limits(limits=1):
        assert thread_budget() == 1
        KSparseAutoencoder(n_components=8, k=2, max_iter=2).fit(sparse_data)
    assert seen == [1, 1]
    assert torch.get_num_threads() == before


def _mkl_threads() -> int | None:
    """Threads of the MKL inside torch, where torch has one."""
    found = re.search(
        r"mkl_get_max_threads\(\) : (\d+)", torch.__config__.parallel_info()
    )
    return None if found is None else int(found.group(1))


@pytest.mark.skipif(_mkl_threads() is None, reason="torch without MKL")
def test_threadpoolctl_limits_reach_the_mkl_inside_torch(sparse_data, hook):
    seen = []
    hook(epoch_begin=lambda state: seen.append(_mkl_threads()))
    before = torch.get_num_threads()
    # What torch is left with after any earlier call of set_num_threads(2):
    # threadpoolctl then lowers the OpenMP pool that torch reports, which
    # the MKL inside torch (invisible to threadpoolctl) does not follow.
    torch.set_num_threads(2)
    try:
        with threadpool_limits(limits=1):
            KSparseAutoencoder(n_components=1024, k=2, max_iter=1).fit(sparse_data)
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


def test_small_models_train_on_one_thread(sparse_data, hook):
    seen = []
    hook(epoch_begin=lambda state: seen.append(torch.get_num_threads()))
    budget = thread_budget()
    # 2 * 256 rows * 32 features * 64 latents: far below SMALL_WORK.
    KSparseAutoencoder(n_components=64, k=2, max_iter=1).fit(sparse_data)
    # 2 * 256 * 32 * 1024 = 2**24: the whole budget.
    KSparseAutoencoder(n_components=1024, k=2, max_iter=1).fit(sparse_data)
    assert seen == [1, budget]


def test_joblib_workers_get_their_share_of_the_cores():
    budgets = Parallel(n_jobs=2)(delayed(thread_budget)() for _ in range(2))
    import joblib

    assert budgets == [max(1, joblib.cpu_count() // 2)] * 2


@requires_cuda
def test_fit_on_cuda_and_use_on_cpu(sparse_data):
    sae = KSparseAutoencoder(
        n_components=32, k=4, max_iter=5, device="cuda", random_state=0
    )
    codes = sae.fit_transform(sparse_data.astype(np.float32))
    assert next(sae.module_.parameters()).device.type == "cuda"
    assert (codes != 0).sum(axis=1).max() <= 4
    loaded = pickle.loads(pickle.dumps(sae))
    assert next(sae.module_.parameters()).device.type == "cuda"  # live model untouched
    assert next(loaded.module_.parameters()).device.type == "cpu"
    loaded.set_params(device="cpu")
    np.testing.assert_allclose(
        loaded.transform(sparse_data.astype(np.float32)), codes, atol=1e-4
    )


@requires_cuda
def test_cpu_model_moved_to_cuda_by_transform_still_trains(sparse_data):
    X = sparse_data.astype(np.float32)
    sae = KSparseAutoencoder(n_components=32, k=4, max_iter=2, device="cpu").fit(X)
    loaded = pickle.loads(pickle.dumps(sae)).set_params(device="cuda")
    loaded.transform(X)
    loaded.partial_fit(X)
    loaded.set_params(warm_start=True).fit(X)
    assert np.isfinite(loaded.score(X))


@requires_cuda
def test_cuda_partial_fit_and_score(sparse_data):
    sae = KSparseAutoencoder(n_components=32, k=4, device="cuda", random_state=0)
    for chunk in np.array_split(sparse_data, 4):
        sae.partial_fit(chunk)
    assert np.isfinite(sae.score(sparse_data))
