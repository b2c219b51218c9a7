"""Progress bars by rows, and the 'skae' logger."""

import logging

import numpy as np
import pytest
import torch

from skae import KSparseAutoencoder
from skae._engine.training import History, LoopState, PartialEpoch, Progress, Step


def test_the_bar_counts_rows_within_an_epoch():
    progress = Progress(epochs=2, epoch_rows=1000, description="model")
    progress.on_train_begin(LoopState(), torch.nn.Linear(1, 1))
    assert progress.bar.n == 0
    for rows in (250, 500):
        progress.on_step_end(LoopState(), Step(1, torch.zeros(()), rows, False))
    assert progress.bar.n == 500 and progress.bar.total == 2000
    assert progress.bar.unit == "row"
    progress.on_train_end(LoopState())


def test_a_resumed_bar_starts_where_the_run_stopped():
    # One epoch of 1000 rows done, and 300 rows of the second, then resumed.
    state = LoopState(
        history=History(loss=[1.0]),
        partial=PartialEpoch(
            steps=3, loss_sum=torch.zeros(()), rows=300, rng_state=None
        ),
    )
    progress = Progress(epochs=2, epoch_rows=1000, description="model")
    progress.on_train_begin(state, torch.nn.Linear(1, 1))
    assert progress.bar.n == 1300
    progress.on_step_end(state, Step(4, torch.zeros(()), 500, False))
    assert progress.bar.n == 1500  # the 200 rows of this step, not 500
    progress.on_train_end(state)


def test_each_epoch_counts_its_rows_from_zero_and_shows_its_figures():
    progress = Progress(epochs=2, epoch_rows=1000, description="model")
    state = LoopState(history=History(loss=[]), best=0.25)
    progress.on_train_begin(state, torch.nn.Linear(1, 1))
    for rows in (600, 1000):
        progress.on_step_end(state, Step(1, torch.zeros(()), rows, False))
    state.history.loss.append(0.5)
    progress.on_epoch_end(state)
    assert progress.bar.postfix == "epoch=1/2, loss=0.5, best=0.25"
    progress.on_step_end(state, Step(3, torch.zeros(()), 250, False))
    assert progress.bar.n == 1250  # the second epoch's first 250 rows
    progress.on_train_end(state)
    assert progress.bar.disable  # closed: tqdm disables a bar it closes


def test_a_bar_never_opened_is_not_closed():
    # A run that fails before its first epoch still ends its callbacks.
    Progress(epochs=2, epoch_rows=1000, description="model").on_train_end(LoopState())


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_a_verbose_fit_or_pass_shows_a_bar_of_rows(method, capsys, tmp_path):
    X = np.random.RandomState(0).randn(2048, 8).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    X = np.load(tmp_path / "X.npy", mmap_mode="r")  # one pass over a memmap
    sae = KSparseAutoencoder(16, k=2, max_iter=1, batch_size=256, verbose=1)
    getattr(sae, method)(X)
    err = capsys.readouterr().err
    assert "KSparseAutoencoder(batch_size=256, k=2, max_iter=1, n_co" in err
    assert "2.05k/2.05k" in err and "row" in err and "epoch=1/1" in err


def test_the_bar_names_the_parameters_that_differ_from_the_defaults():
    sae = KSparseAutoencoder(n_components=64, k=3, verbose=2)
    assert sae._short_name() == "KSparseAutoencoder(k=3, n_components=64)"
    long = KSparseAutoencoder(n_components=64, k=3, checkpoint_path="a" * 80)
    assert len(long._short_name()) == 60 and long._short_name().endswith("…")


def test_the_logger_says_how_a_run_starts_and_stops(caplog):
    X = np.random.RandomState(0).randn(600, 8).astype(np.float32)
    sae = KSparseAutoencoder(
        16,
        k=2,
        max_iter=200,
        early_stopping=True,
        n_iter_no_change=2,
        tol=0.5,
        learning_rate_schedule="constant",
        random_state=0,
    )
    with caplog.at_level(logging.INFO, logger="skae"):
        sae.fit(X)
    messages = [r.getMessage() for r in caplog.records if r.name == "skae"]
    assert messages[0].startswith(
        "KSparseAutoencoder(early_stopping=True, k=2, learning_rat"
    )
    assert "training with adam on cpu, products in float32" in messages[0]
    assert "up to 200 epoch(s) of 540 rows" in messages[0]
    stopped = f"stopped after epoch {sae.n_iter_}: the validation loss"
    assert any(m.startswith(stopped) for m in messages)
    best = int(np.argmax(sae.validation_scores_)) + 1
    assert f"kept the weights of epoch {best}, the best on validation" in messages


def test_each_epoch_is_logged_at_debug_level(caplog):
    X = np.random.RandomState(0).randn(300, 8).astype(np.float32)
    sae = KSparseAutoencoder(16, k=2, max_iter=2, random_state=0)
    with caplog.at_level(logging.DEBUG, logger="skae"):
        sae.fit(X)
    messages = [r.getMessage() for r in caplog.records if r.name == "skae"]
    first, second = sae.loss_curve_
    for epoch, loss, best in ((1, first, first), (2, second, min(first, second))):
        figures = f"loss {loss:.6g}, monitored {loss:.6g}, best {best:.6g}"
        assert f"epoch {epoch}: {figures}" in messages
