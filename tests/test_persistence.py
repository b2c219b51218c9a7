"""Pickle and joblib round trips, across devices."""

import pickle

import joblib
import numpy as np
import pytest
import torch

from skae import KSparseAutoencoder


@pytest.fixture(scope="module")
def fitted(sparse_data):
    return KSparseAutoencoder(n_components=32, k=4, max_iter=5, random_state=0).fit(
        sparse_data
    )


def test_pickle_round_trip_gives_identical_results(fitted, sparse_data):
    loaded = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(
        loaded.transform(sparse_data), fitted.transform(sparse_data)
    )
    np.testing.assert_array_equal(
        loaded.score_samples(sparse_data), fitted.score_samples(sparse_data)
    )
    np.testing.assert_array_equal(loaded.components_, fitted.components_)


def test_joblib_round_trip_gives_identical_results(fitted, sparse_data, tmp_path):
    joblib.dump(fitted, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    np.testing.assert_array_equal(
        loaded.transform(sparse_data), fitted.transform(sparse_data)
    )


def test_partial_fit_continues_after_loading(sparse_data):
    sae = KSparseAutoencoder(n_components=32, k=4, random_state=0)
    sae.partial_fit(sparse_data)
    loaded = pickle.loads(pickle.dumps(sae))
    sae.partial_fit(sparse_data)
    loaded.partial_fit(sparse_data)
    # The optimizer's moments travel with the model: continuing is identical.
    np.testing.assert_array_equal(loaded.components_, sae.components_)


def test_model_saved_for_cuda_transforms_on_a_machine_without_it(
    fitted, sparse_data, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(pickle.dumps(fitted))
    loaded.set_params(device="cuda")
    with pytest.warns(RuntimeWarning, match="using the CPU instead"):
        codes = loaded.transform(sparse_data)
    np.testing.assert_array_equal(codes, fitted.transform(sparse_data))
    with pytest.raises(ValueError, match="device='cuda' was requested"):
        loaded.fit(sparse_data)


def test_cpu_copy_copies_every_tensor_to_host(fitted):
    from skae._engine.device import cpu_copy

    module = fitted.module_
    copied = cpu_copy(module)
    assert type(copied) is type(module)
    for name, tensor in module.state_dict().items():
        twin = copied.state_dict()[name]
        assert twin.device.type == "cpu"
        # NaN marks what a mode never set (a row-mode model's threshold).
        torch.testing.assert_close(twin, tensor, rtol=0, atol=0, equal_nan=True)
        assert twin.data_ptr() != tensor.data_ptr()
    assert all(p.requires_grad for p in copied.parameters())
    assert copied.rule is not module.rule and copied.rule.k == module.rule.k


def test_pickling_leaves_the_live_estimator_untouched(sparse_data):
    sae = KSparseAutoencoder(n_components=8, k=2, max_iter=2).fit(sparse_data)
    module, optimizer_state = sae.module_, sae._optimizer_state
    assert sae.__getstate__() is not sae.__dict__
    pickle.dumps(sae)
    assert sae.module_ is module
    assert sae._optimizer_state is optimizer_state
