"""KSparseAutoencoder's variants: BatchTopK, matching pursuit, Matryoshka."""

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from skae import KSparseAutoencoder
from skae._engine.modules import TopKAutoencoder, tied_init


def fast(**params):
    params = {"n_components": 64, "k": 3, "max_iter": 40, "random_state": 0} | params
    return KSparseAutoencoder(**params)


# ------------------------------------------------------------- BatchTopK


def test_batch_topk_training_keeps_k_per_row_on_average():
    generator = torch.Generator().manual_seed(0)
    weights = tied_init(torch.zeros(16), 128, generator)
    module = TopKAutoencoder(weights, 4, k_mode="batch")
    x = torch.randn(64, 16, generator=generator) * torch.linspace(0.1, 3, 64)[:, None]
    codes = module.selection.train_codes(module, x)
    per_row = (codes.values > 0).sum(dim=1)
    assert int(per_row.sum()) == 4 * 64  # k * batch in all
    assert per_row.min() < 4 < per_row.max()  # but not k in every row
    assert per_row.max() <= module.selection.factor * 4
    assert torch.isfinite(module.threshold)  # the running threshold started


def test_batch_topk_inference_l0_is_close_to_k(sparse_data):
    sae = fast(k_mode="batch", k=4, max_iter=60).fit(sparse_data)
    codes = sae.transform(sparse_data)
    l0 = (codes != 0).sum(axis=1)
    assert abs(l0.mean() - 4) <= 0.4  # within 10% of k
    assert l0.min() < l0.max()  # per-row counts vary, unlike k_mode='row'
    assert sae.threshold_ > 0
    np.testing.assert_array_equal(codes[(codes != 0)] > sae.threshold_, True)
    assert sae.score(sparse_data) > 0.8


def test_batch_topk_inference_is_per_row(sparse_data):
    sae = fast(k_mode="batch", max_iter=5).fit(sparse_data)
    whole = sae.transform(sparse_data[:50])
    alone = np.vstack([sae.transform(row[None]) for row in sparse_data[:50]])
    np.testing.assert_allclose(alone, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(alone != 0, whole != 0)


def test_row_mode_has_no_threshold(sparse_data):
    assert np.isnan(fast(max_iter=2).fit(sparse_data).threshold_)


# ------------------------------------------------------- matching pursuit


def slow_matching_pursuit(X, atoms, b_dec, k):
    """One row at a time, one step at a time, in float64 numpy."""
    codes = np.zeros((len(X), len(atoms)))
    for i, x in enumerate(X):
        residual = x - b_dec
        for _ in range(k):
            scores = atoms @ residual
            j = int(np.argmax(np.abs(scores)))
            code = scores[j]
            codes[i, j] += code
            residual = residual - code * atoms[j]
    return codes


def test_matching_pursuit_equals_slow_reference(sparse_data):
    X = sparse_data[:200]
    sae = fast(encoder="mp", k=4, max_iter=3).fit(X)
    atoms = sae.module_.W_dec.detach().double().numpy()
    b_dec = sae.module_.b_dec.detach().double().numpy()
    expected = slow_matching_pursuit(X, atoms, b_dec, 4)
    np.testing.assert_allclose(sae.transform(X), expected, rtol=1e-9, atol=1e-9)
    assert ((expected != 0).sum(axis=1) <= 4).all()
    reconstruction = expected @ atoms + b_dec
    np.testing.assert_allclose(sae.inverse_transform(expected), reconstruction)


def slow_orthogonal_matching_pursuit(X, atoms, b_dec, k):
    """Row by row: pick by the residual, refit all picks by least squares."""
    codes = np.zeros((len(X), len(atoms)))
    for i, x in enumerate(X - b_dec):
        picked, residual = [], x
        for _ in range(k):
            picked.append(int(np.argmax(np.abs(atoms @ residual))))
            fit = np.linalg.lstsq(atoms[picked].T, x, rcond=None)[0]
            residual = x - fit @ atoms[picked]
        codes[i, picked] = fit
    return codes


def test_orthogonal_matching_pursuit_equals_slow_reference(sparse_data):
    X = sparse_data[:200]
    sae = fast(encoder="omp", k=4, max_iter=3).fit(X)
    atoms = sae.module_.W_dec.detach().double().numpy()
    b_dec = sae.module_.b_dec.detach().double().numpy()
    expected = slow_orthogonal_matching_pursuit(X, atoms, b_dec, 4)
    # The module's ridge of 1e-6 on the Gram matrix moves codes by ~1e-6.
    np.testing.assert_allclose(sae.transform(X), expected, atol=1e-5)
    np.testing.assert_array_equal(sae.transform(X) != 0, expected != 0)
    # What is left of each row is orthogonal to the atoms it used.
    residual = X - sae.inverse_transform(sae.transform(X))
    used = expected != 0
    np.testing.assert_allclose((residual @ atoms.T)[used], 0, atol=1e-5)


def test_matching_pursuit_reconstructs_patches_better_than_linear(patches):
    X = StandardScaler().fit_transform(patches[:4000])
    linear = fast(n_components=128, k=8, max_iter=30).fit(X)
    mp = fast(n_components=128, k=8, max_iter=30, encoder="mp").fit(X)
    omp = fast(n_components=128, k=8, max_iter=30, encoder="omp").fit(X)
    # Measured 0.789 (linear) vs 0.880 (matching pursuit) vs 0.897 (OMP).
    assert mp.score(X) > linear.score(X) + 0.05
    assert omp.score(X) > mp.score(X) + 0.01
    assert ((mp.transform(X) != 0).sum(axis=1) <= 8).all()
    assert ((omp.transform(X) != 0).sum(axis=1) <= 8).all()


@pytest.mark.parametrize("encoder", ["mp", "omp"])
def test_matching_pursuit_refuses_batch_mode(sparse_data, encoder):
    with pytest.raises(ValueError, match="k_mode='batch' needs encoder='linear'"):
        fast(encoder=encoder, k_mode="batch").fit(sparse_data)


# ------------------------------------------------------------- Matryoshka


def test_matryoshka_prefixes_beat_prefixes_of_a_plain_model(sparse_data):
    plain = fast(n_components=96, k=6).fit(sparse_data)
    nested = fast(n_components=96, k=6, matryoshka_sizes=(16, 48)).fit(sparse_data)
    for size in (16, 48):
        plain_score = plain.truncate(size).score(sparse_data)
        nested_score = nested.truncate(size).score(sparse_data)
        assert nested_score > plain_score + 0.1, size
    # The whole dictionary gives up little for its usable prefixes.
    assert nested.score(sparse_data) > plain.score(sparse_data) - 0.05


def test_truncate_keeps_the_prefix_and_leaves_the_model(sparse_data):
    sae = fast(matryoshka_sizes=(8, 32), max_iter=5).fit(sparse_data)
    components = sae.components_.copy()
    small = sae.truncate(8)
    np.testing.assert_array_equal(small.components_, components[:8])
    np.testing.assert_array_equal(sae.components_, components)
    assert sae.n_components == 64 and sae.module_.n_components == 64
    assert small.n_components == 8 and small.k == 3
    assert small.matryoshka_sizes is None
    assert small.transform(sparse_data).shape == (len(sparse_data), 8)
    np.testing.assert_array_equal(
        small.activation_frequency_, sae.activation_frequency_[:8]
    )
    # Codes come from the prefix's own top-k among its 8 latents.
    pre = small.module_.preactivate(torch.from_numpy(sparse_data[:20]).float())
    expected = torch.topk(pre, 3, dim=1).indices.sort(dim=1).values
    got = np.sort(np.argsort(-small.transform(sparse_data[:20]), axis=1)[:, :3], 1)
    kept = (small.transform(sparse_data[:20]) > 0).sum(axis=1) == 3
    np.testing.assert_array_equal(got[kept], expected.numpy()[kept])
    small.partial_fit(sparse_data)  # trains on, with a fresh optimizer
    assert sae.truncate(64).n_components == 64


@pytest.mark.parametrize("size", [0, 65, 2.5, True])
def test_truncate_rejects_bad_sizes(sparse_data, size):
    sae = fast(max_iter=1).fit(sparse_data)
    with pytest.raises(ValueError, match="must be an integer from 1 to"):
        sae.truncate(size)


@pytest.mark.parametrize("sizes", [(32, 16), (0, 8), (8, 100), (8.5,), ()])
def test_bad_matryoshka_sizes_are_refused(sparse_data, sizes):
    with pytest.raises(ValueError, match="matryoshka_sizes"):
        fast(matryoshka_sizes=sizes).fit(sparse_data)


def test_variants_repeat_with_a_seed(sparse_data):
    variants = ({"k_mode": "batch"}, {"encoder": "mp"}, {"encoder": "omp"})
    for params in (*variants, {"matryoshka_sizes": [8]}):
        first = fast(max_iter=3, **params).fit_transform(sparse_data)
        second = fast(max_iter=3, **params).fit_transform(sparse_data)
        np.testing.assert_array_equal(first, second)


def test_threshold_is_nan_once_back_in_row_mode(sparse_data):
    sae = fast(k_mode="batch", warm_start=True, max_iter=2).fit(sparse_data)
    assert sae.threshold_ > 0
    assert np.isnan(sae.set_params(k_mode="row").fit(sparse_data).threshold_)


def test_models_pickled_before_the_variants_still_load(sparse_data):
    import pickle

    sae = fast(max_iter=2).fit(sparse_data)
    codes = sae.transform(sparse_data)
    # What a model pickled before the variants lacked.
    for name in ("k_mode", "encoder", "matryoshka_sizes"):
        delattr(sae, name)
    for name in ("encoder", "k_mode", "matryoshka_sizes"):
        delattr(sae.module_, name)
    del sae.module_._buffers["threshold"]
    loaded = pickle.loads(pickle.dumps(sae))
    np.testing.assert_array_equal(loaded.transform(sparse_data), codes)
    assert loaded.get_params()["k_mode"] == "row"
    loaded.partial_fit(sparse_data)


def test_modules_pickled_with_the_old_names_load_with_the_new(sparse_data):
    import pickle

    sae = fast(k_mode="batch", matryoshka_sizes=(4, 8), max_iter=2).fit(sparse_data)
    codes = sae.transform(sparse_data)
    module = sae.module_
    # The names before the selections were named as on the estimator.
    old = {"selection": "batch", "prefix_sizes": (4, 8), "aux_coef": 0.5}
    for name in ("encoder", "k_mode", "matryoshka_sizes", "aux_k_coef"):
        delattr(module, name)
    vars(module).update(old)
    loaded = pickle.loads(pickle.dumps(sae)).module_
    assert (loaded.encoder, loaded.k_mode) == ("linear", "batch")
    assert (loaded.matryoshka_sizes, loaded.aux_k_coef) == ((4, 8), 0.5)
    assert not {"selection", "prefix_sizes", "aux_coef"} & set(vars(loaded))
    sae.module_ = loaded
    np.testing.assert_array_equal(sae.transform(sparse_data), codes)
