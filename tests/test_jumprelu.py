"""JumpReLUSparseAutoencoder: learned thresholds, the L0 penalty and its
straight-through estimators."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from skae import JumpReLUSparseAutoencoder
from skae._engine.rules import jump_relu, step
from skae.datasets import make_sparse_signals


def fit(X, **params):
    params = {"n_components": 64, "max_iter": 20, "random_state": 0} | params
    return JumpReLUSparseAutoencoder(**params).fit(X)


def mean_l0(codes):
    return float(np.count_nonzero(codes, axis=1).mean())


# ------------------------------------------------- the estimators themselves

# Thresholds 1 and 2 with bandwidth 0.1: the window is |pre - theta| <= 0.05.
# In it: (0, 1), (0, 2), (1, 1) and (1, 3); nothing lies on its edges.
BANDWIDTH = 0.1


def hand_built():
    pre = torch.tensor(
        [[0.5, 0.96, 1.04, 1.5], [1.2, 1.0, 0.94, 2.03]],
        dtype=torch.float64,
        requires_grad=True,
    )
    threshold = torch.tensor(
        [1.0, 1.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True
    )
    upstream = torch.tensor(
        [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], dtype=torch.float64
    )
    return pre, threshold, upstream


def test_jump_relu_gradients_are_the_papers_pseudo_derivatives():
    pre, threshold, upstream = hand_built()
    codes = jump_relu(pre, threshold, BANDWIDTH)
    codes.backward(upstream)
    # pre itself above the threshold (1.0 is not above 1.0), else 0.
    expected = [[0.0, 0.0, 1.04, 0.0], [1.2, 0.0, 0.0, 2.03]]
    assert codes.tolist() == expected
    # Straight through: the upstream gradient where the code is on.
    assert pre.grad.tolist() == [[0.0, 0.0, 3.0, 0.0], [5.0, 0.0, 0.0, 8.0]]
    # -(theta / eps) * sum over the rows in the window of the upstream gradient.
    in_window = [0.0, 2.0 + 6.0, 3.0, 8.0]
    thetas = [1.0, 1.0, 1.0, 2.0]
    expected = [-(t / BANDWIDTH) * g for t, g in zip(thetas, in_window, strict=True)]
    assert threshold.grad.tolist() == pytest.approx(expected)


def test_step_gradients_are_the_papers_pseudo_derivatives():
    pre, threshold, upstream = hand_built()
    active = step(pre, threshold, BANDWIDTH)
    active.backward(upstream)
    assert active.tolist() == [[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]
    # The count passes nothing back to the pre-activations.
    assert pre.grad is None
    # -(1 / eps) * sum over the rows in the window of the upstream gradient.
    in_window = [0.0, 2.0 + 6.0, 3.0, 8.0]
    expected = [-g / BANDWIDTH for g in in_window]
    assert threshold.grad.tolist() == pytest.approx(expected)


@pytest.mark.parametrize("function", [jump_relu, step])
def test_gradients_match_finite_differences_where_they_are_true_derivatives(
    function,
):
    # Away from the thresholds (no pre within eps / 2) the pseudo-derivatives
    # are the true derivatives: 0 for theta, H or 0 for pre.
    rng = torch.Generator().manual_seed(0)
    threshold = torch.rand(5, generator=rng, dtype=torch.float64) + 0.5
    offsets = torch.rand(7, 5, generator=rng, dtype=torch.float64) + 0.1
    signs = torch.where(torch.rand(7, 5, generator=rng) < 0.5, -1.0, 1.0)
    pre = (threshold + signs * offsets).requires_grad_()
    threshold.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p, t: function(p, t, BANDWIDTH), (pre, threshold)
    )
    # Inside the window too, for the pre-activations alone.
    near = (threshold + 0.01 * signs).detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p: function(p, threshold.detach(), BANDWIDTH), (near,)
    )


def test_the_l0_penalty_trains_only_the_thresholds(sparse_data):
    sae = fit(sparse_data, sparsity_weight=0.5, bandwidth=0.2, max_iter=3)
    module = sae.module_
    module.zero_grad(set_to_none=True)
    x = torch.as_tensor(sparse_data[:200], dtype=torch.float32)
    pre = module.preactivate(x)
    theta = module.latent_threshold
    codes = module.rule.activate(pre, theta)
    penalty = module.rule.penalty(codes, module.W_dec, pre, theta)
    penalty.backward()
    pre, theta, penalty = pre.detach(), theta.detach(), penalty.detach()
    count = (pre > theta).sum(dim=1).double().mean()
    assert float(penalty) == pytest.approx(0.5 * float(count), rel=1e-6)
    assert module.W_enc.grad is None and module.b_enc.grad is None
    # d/d log(theta) = theta * d/d theta, with d/d theta from eq. 12.
    in_window = ((pre - theta).abs() <= 0.1).double().mean(dim=0)
    expected = -0.5 / 0.2 * in_window * theta.double()
    np.testing.assert_allclose(module.log_threshold.grad, expected, rtol=1e-5)


# ------------------------------------------------------------ the estimator


def test_codes_are_pre_activations_above_the_thresholds(sparse_data):
    sae = fit(sparse_data)
    module = sae.module_
    W_enc, b_enc, b_dec = (
        p.detach().double().numpy() for p in (module.W_enc, module.b_enc, module.b_dec)
    )
    pre = (sparse_data - b_dec) @ W_enc.T + b_enc
    codes = sae.transform(sparse_data)
    above = pre > sae.threshold_
    np.testing.assert_array_equal(codes != 0, above)
    assert (codes[~above] == 0).all()
    np.testing.assert_allclose(codes[above], pre[above], rtol=1e-10)
    assert 0 < above.mean() < 0.5


def test_thresholds_move_with_the_penalty(sparse_data):
    # From the same start, the thresholds fall without a penalty and rise
    # with one (measured: at most 0.41 for 0, at least 0.67 for 1 over
    # seeds 0-2), and the mean L0 falls as the weight grows (11.8, 10.7, 5.1).
    weights = [0.0, 0.1, 1.0]
    models = [
        fit(sparse_data, sparsity_weight=weight, initial_threshold=0.5)
        for weight in weights
    ]
    thresholds = [m.threshold_ for m in models]
    l0 = [mean_l0(m.transform(sparse_data)) for m in models]
    assert thresholds[0].max() < 0.45 and thresholds[-1].min() > 0.6
    medians = [np.median(t) for t in thresholds]
    assert all(a < b for a, b in itertools.pairwise(medians)), medians
    assert all(a > b for a, b in itertools.pairwise(l0)), l0
    assert l0[-1] < 0.6 * l0[1], l0


def test_the_penalty_drives_l0_down(sparse_data):
    # Measured over seeds 0-2: 41-43 non-zero codes of 64 without the
    # penalty, 2.6 with the default weight.
    dense = mean_l0(fit(sparse_data, sparsity_weight=0.0).transform(sparse_data))
    sparse = mean_l0(fit(sparse_data).transform(sparse_data))
    assert sparse < 0.2 * dense, (sparse, dense)
    assert sparse >= 1


def test_beats_pca_with_as_many_non_zeros():
    # Measured over seeds 0-2: explained variance 0.80-0.86 at L0 about 2.5,
    # PCA with 3 components 0.24-0.26.
    X, _, _ = make_sparse_signals(3000, 32, 48, 3, noise=0.05, random_state=0)
    X_train, X_test = X[:2500], X[2500:]
    sae = fit(X_train, max_iter=30)
    n_kept = int(np.ceil(mean_l0(sae.transform(X_test))))
    pca = PCA(n_kept).fit(X_train)
    residual = X_test - pca.inverse_transform(pca.transform(X_test))
    pca_score = 1 - np.square(residual).sum() / np.square(X_test - X_test.mean(0)).sum()
    assert sae.score(X_test) > 0.7
    assert sae.score(X_test) > pca_score + 0.4, (sae.score(X_test), pca_score)


def test_a_fixed_random_state_repeats_exactly(sparse_data):
    first, second = fit(sparse_data, max_iter=5), fit(sparse_data, max_iter=5)
    np.testing.assert_array_equal(first.components_, second.components_)
    np.testing.assert_array_equal(first.threshold_, second.threshold_)
    np.testing.assert_array_equal(
        first.transform(sparse_data), second.transform(sparse_data)
    )


def test_threshold_follows_the_data_dtype_and_gates_the_codes(sparse_data):
    X = sparse_data.astype(np.float32)
    sae = fit(X, max_iter=2)
    assert sae.threshold_.dtype == np.float32
    assert sae.threshold_.shape == (64,)
    # Learned: each moved from its start, sqrt(sparsity_weight), on its own.
    start = np.sqrt(sae.sparsity_weight)
    assert np.abs(sae.threshold_ - start).min() > 1e-4
    assert np.unique(sae.threshold_).size == 64
    # And used: a code is 0 or above its latent's threshold, and some rows
    # have pre-activations between 0 and the threshold that are cut to 0.
    codes = sae.transform(X)
    assert ((codes == 0) | (codes > sae.threshold_)).all()
    with torch.no_grad():
        pre = sae.module_.preactivate(torch.as_tensor(X)).numpy()
    assert ((pre > 0) & (pre <= sae.threshold_)).sum() > 0.01 * pre.size


def test_auto_initial_threshold_is_the_root_of_the_weight(sparse_data):
    sae = fit(sparse_data, sparsity_weight=2.0, max_iter=1, learning_rate=1e-9)
    np.testing.assert_allclose(sae.threshold_, np.sqrt(2.0), rtol=1e-5)
    sae = fit(sparse_data, sparsity_weight=0.0, max_iter=1, learning_rate=1e-9)
    np.testing.assert_allclose(sae.threshold_, 1e-3, rtol=1e-5)


def test_warm_start_and_partial_fit_apply_new_settings(sparse_data):
    sae = fit(sparse_data, sparsity_weight=0.1, max_iter=10)
    before = sae.threshold_.copy()
    sae.set_params(sparsity_weight=3.0, bandwidth=0.3, warm_start=True)
    sae.fit(sparse_data)
    assert sae.module_.rule.sparsity_weight == 3.0
    assert sae.module_.rule.bandwidth == 0.3
    assert (sae.threshold_ > before).all()
    sae.set_params(sparsity_weight=0.5).partial_fit(sparse_data)
    assert sae.module_.rule.sparsity_weight == 0.5


@pytest.mark.parametrize(
    "params, name",
    [
        ({"bandwidth": -0.1}, "bandwidth"),
        ({"bandwidth": 0.0}, "bandwidth"),
        ({"sparsity_weight": -1.0}, "sparsity_weight"),
        ({"initial_threshold": 0.0}, "initial_threshold"),
        ({"initial_threshold": "large"}, "initial_threshold"),
        ({"n_components": 0}, "n_components"),
    ],
)
def test_bad_parameters_raise_clear_errors(small_X, params, name):
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        JumpReLUSparseAutoencoder(**params).fit(small_X)
