"""StackedSparseAutoencoder: greedy and deep training, per-layer settings."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

import skae._base
import skae._engine.training
from skae import StackedSparseAutoencoder


def stack(**params):
    params = {
        "hidden_layer_sizes": (48, 12),
        "max_iter": 30,
        "random_state": 0,
    } | params
    return StackedSparseAutoencoder(**params)


@pytest.mark.parametrize("sparsity", ["kl", "l1", "topk"])
@pytest.mark.parametrize("pretrain", [True, False])
def test_greedy_and_deep_stacks_train_and_transform(digits, sparsity, pretrain):
    X, _ = digits
    sae = stack(sparsity=sparsity, pretrain=pretrain, k=(12, 4), alpha=0.1).fit(X)
    codes = sae.transform(X)
    assert codes.shape == (len(X), 12)
    assert sae.inverse_transform(codes).shape == X.shape
    assert [len(c) > 0 for c in sae.pretrain_loss_curves_] == [pretrain] * 2
    assert sae.n_iter_ >= 1
    assert sae.loss_curve_[-1] < sae.loss_curve_[0]
    # The same stack left untrained scores about -0.05 (the mean scores 0);
    # these score 0.47 (deep KL) to 0.72. PCA with 12 components, the best a
    # linear 12-number code does, scores 0.78: 30 epochs do not reach it.
    untrained = stack(sparsity=sparsity, pretrain=pretrain, k=(12, 4), alpha=0.1)
    with pytest.warns(RuntimeWarning, match="reconstructs X worse than X's mean"):
        untrained.set_params(learning_rate=1e-12, max_iter=1).fit(X)
    assert sae.score(X) > untrained.score(X) + 0.4
    if sparsity == "topk":  # 4 numbers a row: beats the best 4-number linear code
        pca = PCA(n_components=4).fit(X)
        assert sae.score(X) > pca.explained_variance_ratio_.sum() + 0.1


def test_greedy_pretraining_beats_deep_training_for_sigmoid_stacks(digits):
    # The reason stacked autoencoders were pretrained layer by layer: with the
    # same fine-tuning budget, the pretrained stack reconstructs better.
    X, _ = digits
    greedy = stack().fit(X).score(X)
    deep = stack(pretrain=False).fit(X).score(X)
    assert greedy > deep + 0.1


def test_encode_layers_gives_every_layer_and_ends_with_transform(digits):
    X, _ = digits
    sae = stack(sparsity="topk", k=(12, 3), max_iter=5).fit(X)
    first, last = sae.encode_layers(X)
    assert first.shape == (len(X), 48) and last.shape == (len(X), 12)
    np.testing.assert_array_equal(last, sae.transform(X))
    assert (first != 0).sum(axis=1).max() <= 12
    assert (last != 0).sum(axis=1).max() <= 3
    assert len(sae.layers_) == 2 and sae.layers_[1].n_components == 12


def test_pretrained_stack_without_fine_tuning(digits):
    X, _ = digits
    sae = stack(sparsity="l1", alpha=0.1, fine_tune=False).fit(X)
    assert sae.n_iter_ == 0 and sae.loss_curve_ == []
    assert all(len(curve) > 0 for curve in sae.pretrain_loss_curves_)
    first = sae.layers_[0]
    x = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        expected = first.encode(x)
    np.testing.assert_allclose(
        sae.encode_layers(X)[0], expected.numpy(), rtol=1e-5, atol=1e-6
    )


def test_larger_last_layer_alpha_gives_sparser_codes(sparse_data):
    l0 = []
    for alpha in [0.01, 0.1, 1.0]:
        sae = stack(sparsity="l1", alpha=[0.05, alpha], hidden_layer_sizes=(64, 32))
        codes = sae.fit(sparse_data).transform(sparse_data)
        l0.append((codes > 0).sum(axis=1).mean())
    assert all(a > b for a, b in itertools.pairwise(l0)), l0


def test_layer_weights_scale_each_layers_penalty(digits):
    X, _ = digits
    sae = stack(sparsity="l1", alpha=0.5, max_iter=2).fit(X)
    module = sae.module_
    x = torch.as_tensor(X[:64], dtype=torch.float32)
    with torch.no_grad():
        per_layer, codes = [], x
        for layer in module.layers:
            codes, sparsity = layer.encode_with_penalty(codes)
            per_layer.append(sparsity + layer.weight_penalty())
        module.layer_weights = [2.0, 0.0]
        assert float(module(x).penalty) == pytest.approx(
            2 * float(per_layer[0]), rel=1e-5
        )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sparsity_target": [0.05, 0.1, 0.2]}, "sparsity_target has 3 values but"),
        ({"sparsity": "topk", "k": [4]}, "k has 1 values but hidden_layer_sizes has 2"),
        ({"layer_weights": [1.0]}, "layer_weights has 1 values"),
        ({"sparsity": "l1", "alpha": [0.1, -1.0]}, "every value of alpha must be"),
        (
            {"sparsity": "topk", "k": [4, 13]},
            "k=13 for layer 1 must be at most its width 12",
        ),
        # The values of the rules not in use are checked too.
        ({"sparsity": "kl", "k": [1, 2, 3]}, "k has 3 values but"),
        ({"sparsity": "kl", "alpha": [0.1, -1.0]}, "every value of alpha must be"),
        ({"sparsity": "topk", "sparsity_target": [0.5, 1.5]}, "sparsity_target must"),
        ({"sparsity": "l1", "k": [1, 0]}, "every value of k must be"),
        ({"hidden_layer_sizes": (8, 0)}, "hidden_layer_sizes must be a non-empty"),
        ({"hidden_layer_sizes": ()}, "hidden_layer_sizes must be a non-empty"),
        ({"pretrain": False, "fine_tune": False}, "would train nothing"),
    ],
)
def test_bad_per_layer_settings_fail_before_training(
    digits, params, message, monkeypatch, hook
):
    monkeypatch.setattr(skae._base, "train", None)
    hook(train_begin=None)  # a loop that starts fails: None is not callable
    with pytest.raises(ValueError, match=message):
        stack(**params).fit(digits[0])


def test_warm_start_cannot_change_the_layers(digits):
    X, _ = digits
    sae = stack(max_iter=2, warm_start=True).fit(X)
    sae.set_params(hidden_layer_sizes=(48, 10))
    with pytest.raises(ValueError, match=r"hidden_layer_sizes=\(48, 10\) differs"):
        sae.fit(X)
    sae.set_params(hidden_layer_sizes=(48, 12)).fit(X)
    assert sae.n_iter_ == 4


def test_components_are_what_each_last_latent_adds(digits):
    X, _ = digits
    sae = stack(sparsity="topk", k=(12, 3), max_iter=3).fit(X)
    codes = np.zeros((2, 12))
    codes[1, 5] = 1.0
    decoded = sae.inverse_transform(codes)
    np.testing.assert_allclose(sae.components_[5], decoded[1] - decoded[0], atol=1e-5)


def test_per_layer_targets_reach_their_layers(digits):
    X, _ = digits
    # Trained to the opposite targets first: a sigmoid layer's bias starts at
    # logit(target), so only training can move the layers to the new ones.
    sae = stack(sparsity_target=(0.2, 0.02), max_iter=40, warm_start=True).fit(X)
    sae.set_params(sparsity_target=(0.02, 0.2)).fit(X)
    first, last = (codes.mean() for codes in sae.encode_layers(X))
    assert 0.01 < first < 0.04 and 0.1 < last < 0.3, (first, last)


def test_layer_weights_scale_sparsity_not_weight_decay(digits):
    X, _ = digits
    sae = stack(weight_decay=1.0, layer_weights=[0.0, 0.0], max_iter=2).fit(X)
    module = sae.module_
    with torch.no_grad():
        penalty = float(module(torch.as_tensor(X[:32], dtype=torch.float32)).penalty)
        decay = sum(float(layer.weight_penalty()) for layer in module.layers)
    assert decay > 0 and penalty == pytest.approx(decay, rel=1e-5)


def test_warm_start_cannot_change_the_sparsity_but_applies_output_activation(digits):
    X, _ = digits
    sae = stack(max_iter=2, warm_start=True).fit(X)
    with pytest.raises(ValueError, match="sparsity='topk' differs from the fitted"):
        sae.set_params(sparsity="topk", k=4).fit(X)
    sae.set_params(sparsity="kl", output_activation="sigmoid").fit(X)
    reconstruction = sae.inverse_transform(sae.transform(X))
    assert (reconstruction > 0).all() and (reconstruction < 1).all()
    with pytest.raises(ValueError, match="fine_tune=False turns off"):
        sae.set_params(fine_tune=False).fit(X)


def test_deep_fits_and_partial_fit_keep_no_codes_in_memory(digits, monkeypatch):
    X, _ = digits

    def forbidden(*args, **kwargs):
        raise AssertionError("codes of every row were materialized")

    monkeypatch.setattr(StackedSparseAutoencoder, "_layer_codes", forbidden)
    stack(pretrain=False, max_iter=2).fit(X)
    stack().partial_fit(X)


def test_infinite_layer_weight_is_rejected(digits):
    with pytest.raises(
        ValueError, match="every value of layer_weights must be a finite"
    ):
        stack(layer_weights=[np.inf, 1.0]).fit(digits[0])


def test_nested_layer_sizes_are_flattened(sparse_data):
    sae = StackedSparseAutoencoder(hidden_layer_sizes=[[8, 4]], max_iter=1)
    assert sae.fit_transform(sparse_data[:100]).shape == (100, 4)
