"""KLSparseAutoencoder: target activations, the CS294A patch experiment."""

import copy
import itertools

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from skae import KLSparseAutoencoder
from skae._engine.rules import rho_divergence
from skae.metrics import atom_localization

# The CS294A settings: 25 hidden units, rho = 0.01, sigmoid outputs.
CS294A = {
    "n_components": 25,
    "sparsity_target": 0.01,
    "output_activation": "sigmoid",
    "learning_rate": 1e-2,
    "max_iter": 200,
    "random_state": 0,
}


@pytest.fixture(scope="module")
def cs294a_model(patches):
    return KLSparseAutoencoder(**CS294A).fit(patches)


def test_each_unit_mean_activation_is_within_a_factor_2_of_rho(cs294a_model, patches):
    rho_hat = cs294a_model.transform(patches).mean(axis=0)
    assert (rho_hat > 0.005).all() and (rho_hat < 0.02).all(), rho_hat
    # activation_frequency_, rho_hat as the last epoch's steps saw it (the
    # weights moving through it), is within the same factor of 2.
    frequency = cs294a_model.activation_frequency_
    assert (frequency > 0.005).all() and (frequency < 0.02).all(), frequency


def test_activation_frequency_is_the_last_epochs_mean_activation(
    patches, last_epoch_activity
):
    sae = KLSparseAutoencoder(**CS294A | {"max_iter": 3}).fit(patches)
    np.testing.assert_allclose(
        sae.activation_frequency_, last_epoch_activity.frequency, rtol=1e-5
    )


def test_atoms_on_patches_are_localized(cs294a_model, patches):
    # Measure: share of an atom's energy in its best 4 × 4 window (a quarter
    # of the patch). Random atoms score about 0.39, PCA's about 0.37.
    pca = PCA(n_components=25, random_state=0).fit(patches)
    localization = atom_localization(cs294a_model.components_, (8, 8), 4).mean()
    assert atom_localization(pca.components_, (8, 8), 4).mean() < 0.40
    assert localization > atom_localization(pca.components_, (8, 8), 4).mean() + 0.08
    assert localization > 0.47


def test_reconstruction_is_useful_and_in_the_unit_interval(cs294a_model, patches):
    # Mean activation 0.01 of 25 units: measured 0.399, above PCA with 5
    # components (0.359; 8 score 0.497). The untrained model scores 0.
    pca = PCA(n_components=5).fit(patches)
    assert cs294a_model.score(patches) > pca.explained_variance_ratio_.sum()
    reconstruction = cs294a_model.inverse_transform(cs294a_model.transform(patches))
    assert (reconstruction > 0).all() and (reconstruction < 1).all()


@pytest.mark.parametrize("loss", ["kl", "l1", "l2"])
def test_larger_target_gives_larger_mean_activation(patches, loss):
    # The encoder's bias starts at logit(target), so a fresh model starts at
    # its target. Each model here starts from one trained to 0.3 instead, and
    # only the penalty can move it to its own target.
    targets = [0.02, 0.05, 0.1, 0.2]
    params = CS294A | {"max_iter": 30, "sparsity_loss": loss, "warm_start": True}
    start = KLSparseAutoencoder(**params | {"sparsity_target": 0.3}).fit(patches)
    means = [
        copy.deepcopy(start)
        .set_params(sparsity_target=rho)
        .fit(patches)
        .activation_frequency_.mean()
        for rho in targets
    ]
    assert all(a < b for a, b in itertools.pairwise(means)), means
    if loss != "l2":  # a squared gap pulls too weakly near rho to get this close
        np.testing.assert_allclose(means, targets, rtol=0.5)


def test_larger_weight_pulls_mean_activations_closer_to_target(patches):
    gaps = []
    for weight in [0.0, 0.3, 3.0]:
        sae = KLSparseAutoencoder(
            **CS294A | {"max_iter": 30, "sparsity_weight": weight}
        )
        rho_hat = sae.fit(patches).activation_frequency_
        gaps.append(np.abs(np.log(rho_hat / 0.01)).mean())
    assert gaps[0] > gaps[1] > gaps[2], gaps


@pytest.mark.parametrize("kind", ["kl", "l1", "l2"])
def test_divergence_is_finite_at_the_edges(kind):
    rho_hat = torch.tensor([0.0, 1e-12, 0.5, 1.0], requires_grad=True)
    value = rho_divergence(0.05, rho_hat, kind)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(rho_hat.grad).all()
    assert float(rho_divergence(0.05, torch.tensor([0.05]), kind)) == pytest.approx(
        0, abs=1e-6
    )


def test_weight_decay_shrinks_weights(patches):
    norms = [
        np.linalg.norm(
            KLSparseAutoencoder(**CS294A | {"max_iter": 20, "weight_decay": wd})
            .fit(patches)
            .components_
        )
        for wd in [0.0, 1e-2]
    ]
    assert norms[1] < 0.8 * norms[0]


def test_a_unit_that_went_quiet_is_pulled_back():
    # sigmoid(-25) ~ 1e-11: the penalty must still push its mean activation up.
    pre = torch.tensor([[-25.0, 0.0]] * 8, requires_grad=True)
    rho_divergence(0.05, torch.sigmoid(pre).mean(dim=0), "kl").backward()
    assert pre.grad[:, 0].max() < -1e-3


def test_divergences_match_their_closed_forms():
    rho, rho_hat = 0.2, torch.tensor([0.5, 0.05, 0.2], dtype=torch.float64)
    q = rho_hat.numpy()
    kl = rho * np.log(rho / q) + (1 - rho) * np.log((1 - rho) / (1 - q))
    assert float(rho_divergence(rho, rho_hat, "kl")) == pytest.approx(kl.sum(), 1e-12)
    assert kl[0] == pytest.approx(0.19274475702175753)  # by hand, KL(0.2 || 0.5)
    l1 = np.abs(rho - q).sum()
    assert float(rho_divergence(rho, rho_hat, "l1")) == pytest.approx(l1, 1e-12)
    l2 = np.square(rho - q).sum()
    assert float(rho_divergence(rho, rho_hat, "l2")) == pytest.approx(l2, 1e-12)


def test_an_unknown_divergence_is_an_error_not_another_divergence():
    with pytest.raises(ValueError, match="unknown divergence 'KL'"):
        rho_divergence(0.05, torch.tensor([0.1]), "KL")
