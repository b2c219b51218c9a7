"""solver='lbfgs': full-batch quasi-Newton fits of the smooth penalties,
refused where it cannot work, resumed exactly."""

import numpy as np
import pytest
import torch

from skae import (
    KLSparseAutoencoder,
    KSparseAutoencoder,
    L1SparseAutoencoder,
    L2SparseAutoencoder,
    StackedSparseAutoencoder,
)
from skae._engine.checkpoint import load_checkpoint
from skae.datasets import make_image_patches
from skae.metrics import spectral_concentration

pytestmark = pytest.mark.filterwarnings("ignore:Resuming:UserWarning")

#: The loss of test_lbfgs_fits_are_pinned_to_their_solver_settings's fit.
PINNED_LBFGS_LOSS = 11.0076


@pytest.fixture(scope="module")
def patches():
    X = make_image_patches(2000, random_state=0)
    return (X - X.mean(axis=0)) / X.std(axis=0)


def concentration(atoms: np.ndarray) -> float:
    """The median spectral concentration of 8x8 atoms."""
    return float(np.median(spectral_concentration(atoms, (8, 8))))


@pytest.mark.parametrize(
    "estimator",
    [
        L1SparseAutoencoder(32, alpha=0.5),
        L2SparseAutoencoder(32, alpha=0.5),
        KLSparseAutoencoder(32),
        StackedSparseAutoencoder((32, 8), sparsity="l1"),
    ],
    ids=["l1", "l2", "kl", "stacked"],
)
def test_lbfgs_reaches_a_lower_loss_than_a_few_adam_epochs(patches, estimator):
    # Adam: 5 epochs of 8 steps. L-BFGS: 50 iterations on all rows.
    params = {"tol": 0, "random_state": 0}
    adam = estimator.set_params(solver="adam", max_iter=5, **params).fit(patches)
    adam_loss = adam.loss_curve_[-1]
    lbfgs = estimator.set_params(solver="lbfgs", max_iter=50).fit(patches)
    assert lbfgs.n_iter_ == 50
    assert lbfgs.loss_curve_[-1] < 0.9 * adam_loss
    # Every iteration lowers the loss of all rows: a line search, not noise.
    assert np.all(np.diff(lbfgs.loss_curve_) <= 1e-6 * lbfgs.loss_curve_[0])


def test_lbfgs_learns_the_cs294a_edge_detectors():
    # Ng's recipe, on fewer patches: 25 sigmoid units, rho 0.01, beta 3,
    # lambda 1e-4, sigmoid outputs; L-BFGS until the loss stalls.
    X = make_image_patches(4000, preprocessing="cs294a", random_state=0)
    recipe = {
        "sparsity_target": 0.01,
        "sparsity_weight": 3.0,
        "weight_decay": 1e-4,
        "output_activation": "sigmoid",
        "random_state": 0,
    }
    sae = KLSparseAutoencoder(25, solver="lbfgs", max_iter=400, **recipe).fit(X)
    assert sae.n_iter_ < 400  # the relative tolerance stopped it
    assert abs(sae.transform(X).mean() - 0.01) < 0.005
    assert concentration(sae.components_) >= 0.85
    # Adam for as many passes (of 16 steps) reconstructs worse at the same
    # sparsity (0.41 against 0.44 when written).
    adam = KLSparseAutoencoder(25, max_iter=sae.n_iter_, tol=0, **recipe).fit(X)
    assert abs(adam.transform(X).mean() - 0.01) < 0.005
    assert sae.score(X) > adam.score(X) + 0.01


def test_an_interrupted_lbfgs_fit_resumes_exactly(interrupt, patches, tmp_path):
    params = {"solver": "lbfgs", "max_iter": 8, "tol": 0, "random_state": 0}
    whole = L1SparseAutoencoder(16, **params).fit(patches)
    path = tmp_path / "run.ckpt"
    with interrupt(epoch=5), pytest.warns(RuntimeWarning, match="interrupted"):
        L1SparseAutoencoder(16, checkpoint_path=path, **params).fit(patches)
    assert load_checkpoint(path).loop.history.n_epochs == 4
    resumed = L1SparseAutoencoder(16, checkpoint_path=path, **params).fit(patches)
    assert resumed.loss_curve_ == whole.loss_curve_
    for name, value in whole.module_.state_dict().items():
        torch.testing.assert_close(
            resumed.module_.state_dict()[name], value, rtol=0, atol=0
        )


def test_a_warm_start_may_change_the_solver(patches):
    sae = L1SparseAutoencoder(16, max_iter=3, random_state=0, warm_start=True)
    sae.fit(patches)
    adam_loss = sae.loss_curve_[-1]
    sae.set_params(solver="lbfgs", max_iter=10).fit(patches)
    assert sae.n_iter_ == 13
    assert sae.loss_curve_[-1] < adam_loss
    sae.set_params(solver="adam", max_iter=1).fit(patches)
    assert sae.n_iter_ == 14


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (StackedSparseAutoencoder((16,), sparsity="topk", k=2), "has none"),
        (L1SparseAutoencoder(16, dictionary="archetypal"), "archetypal"),
    ],
)
def test_lbfgs_is_refused_where_it_cannot_work(patches, estimator, message):
    with pytest.raises(ValueError, match=message):
        estimator.set_params(solver="lbfgs").fit(patches)
    assert not hasattr(estimator, "module_")


def test_lbfgs_refuses_a_memmap_and_partial_fit(patches, tmp_path):
    path = tmp_path / "X.npy"
    np.save(path, patches.astype(np.float32))
    sae = L1SparseAutoencoder(16, solver="lbfgs")
    with pytest.raises(ValueError, match="memmap streamed from disk"):
        sae.fit(np.load(path, mmap_mode="r"))
    with pytest.raises(ValueError, match="partial_fit takes minibatch steps"):
        sae.partial_fit(patches)
    assert not hasattr(sae, "module_")


def test_estimators_without_a_gradient_offer_no_solver():
    assert "solver" not in KSparseAutoencoder().get_params()


def test_each_epoch_of_an_lbfgs_fit_is_one_iteration_of_its_solver(patches, hook):
    steps, begun, counted = [], [], []
    hook(
        step_begin=begun.append,
        step_end=lambda state, step: (
            steps.append((state, step)),
            counted.append(state.steps),
        ),
    )
    sae = L1SparseAutoencoder(16, solver="lbfgs", max_iter=7, tol=0, random_state=0)
    sae.fit(patches)
    # The solver's own count: one iteration (and its line search) a call.
    assert sae._optimizer_state["state"][0]["n_iter"] == 7
    assert sae._optimizer_state["param_groups"][0]["history_size"] == 20
    # Callbacks see one step an iteration: all the rows, the last step of
    # its epoch, with the loop's state and the loss after the step.
    assert len(steps) == 7
    for epoch, (state, step) in enumerate(steps):
        assert state is not None and step.steps == 1 and step.last
        assert step.rows == len(patches)
        loss = float(step.loss_sum) / step.rows
        assert loss == pytest.approx(sae.loss_curve_[epoch], rel=1e-6)
        # The rows and their forward pass, for watchers that measure them.
        assert step.x.shape == patches.shape
        assert step.output.reconstruction.shape == patches.shape
    assert len(begun) == 7 and all(state is steps[0][0] for state in begun)
    assert counted == [1, 2, 3, 4, 5, 6, 7]  # the loop's count of steps


def test_lbfgs_fits_are_pinned_to_their_solver_settings(patches):
    # A unit step length for the line search to start from, and a memory of
    # 20 pairs: the loss after 25 iterations, measured when written.
    sae = L1SparseAutoencoder(16, solver="lbfgs", max_iter=25, tol=0, random_state=0)
    again = L1SparseAutoencoder(16, solver="lbfgs", max_iter=25, tol=0, random_state=0)
    assert sae.fit(patches).loss_curve_ == again.fit(patches).loss_curve_
    assert sae.loss_curve_[-1] == pytest.approx(PINNED_LBFGS_LOSS, rel=1e-4)


def test_lbfgs_too_large_for_memory_is_refused_before_training(patches, monkeypatch):
    import skae._base

    # 2000 rows of 64 features, 512 codes each: Adam's batches of 256 fit in
    # 4 MiB, all the rows at once do not.
    monkeypatch.setattr(skae._base, "available_memory", lambda device: 4 * 2**20)
    L1SparseAutoencoder(512, max_iter=1, random_state=0).fit(patches)
    sae = L1SparseAutoencoder(512, solver="lbfgs", max_iter=1)
    with pytest.raises(
        ValueError, match=r"all rows and their codes.* or use solver='adam'"
    ):
        sae.fit(patches)
    assert not hasattr(sae, "module_")
