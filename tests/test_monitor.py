"""skae.monitor.watch: loss, L0, FVU and dead share every few steps."""

import logging
import math

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from skae import KLSparseAutoencoder, KSparseAutoencoder, L1SparseAutoencoder
from skae.monitor import StepMetrics, watch


def low_rank(n_rows=512, n_features=16, rank=3, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.randn(n_rows, rank) @ rng.randn(rank, n_features)).astype(np.float32)


def test_reports_come_every_n_steps_and_at_the_end_with_k_active_latents():
    X = low_rank()
    reports = []
    sae = KSparseAutoencoder(64, k=3, batch_size=64, max_iter=3, tol=0, random_state=0)
    with watch(reports.append, every=5):
        sae.fit(X)
    epoch_rows = sum(r.rows for r in reports) / 3  # every row once an epoch
    assert epoch_rows in (len(X), len(X) - len(X) // 10)  # a validation share held out
    total = 3 * math.ceil(epoch_rows / 64)
    assert [r.step for r in reports] == [*range(5, total, 5), total]
    assert [r.epoch for r in reports] == [
        1 + (r.step - 1) * 3 // total for r in reports
    ]
    assert all(2.5 < r.l0 <= 3 for r in reports)  # top-k codes: at most k per row
    assert reports[-1].fvu < reports[0].fvu < 1.5


def test_a_single_pass_reports_the_pass_as_the_model_records_it():
    """partial_fit's activation_frequency_ is the activity seen during its
    one pass, the same rows and codes the watch sees: L0 and the dead share
    agree exactly."""
    X = low_rank(n_rows=256)
    reports = []
    sae = KSparseAutoencoder(64, k=1, batch_size=256, random_state=0)
    with watch(reports.append, every=1000):
        sae.partial_fit(X)
    (report,) = reports
    frequency = sae.activation_frequency_
    assert 0 < np.mean(frequency == 0) < 1  # some latents never fired
    assert report.dead_fraction == pytest.approx(np.mean(frequency == 0))
    assert report.l0 == pytest.approx(frequency.sum())
    assert report.rows == 256 and report.step == 1 and report.epoch == 1


def test_loss_and_fvu_are_those_of_the_step():
    """One L-BFGS iteration on all the training rows: the report's loss is
    the loss the fit records, and its FVU is 1 - score on those rows."""
    X = low_rank(n_rows=200)
    reports = []
    sae = L1SparseAutoencoder(
        8, alpha=1e-3, solver="lbfgs", max_iter=2, early_stopping=False, random_state=0
    )
    with watch(reports.append, every=1):
        sae.fit(X)
    assert [r.step for r in reports] == [1, 2]
    assert reports[-1].loss == pytest.approx(sae.loss_curve_[-1], rel=1e-5)
    assert reports[-1].fvu == pytest.approx(1 - sae.score(X), rel=1e-4)


def test_smooth_codes_have_no_l0_or_dead_share():
    reports = []
    with watch(reports.append, every=2):
        KLSparseAutoencoder(8, max_iter=1, batch_size=64, random_state=0).fit(
            low_rank()
        )
    assert reports and all(
        math.isnan(r.l0) and math.isnan(r.dead_fraction) for r in reports
    )
    assert all(0 < r.fvu < 2 and r.loss > 0 for r in reports)


def test_dead_rows_sets_the_window_of_the_dead_share():
    """A latent that fired early but not in the last rows is dead only
    when ``dead_rows`` is shorter than the run."""
    X = low_rank(n_rows=1024)
    figures = {}
    for dead_rows in (None, 64):
        reports = []
        sae = KSparseAutoencoder(
            256, k=1, batch_size=64, max_iter=2, tol=0, random_state=0
        )
        with watch(reports.append, every=10_000, dead_rows=dead_rows):
            sae.fit(X)
        figures[dead_rows] = reports[-1].dead_fraction
    assert figures[64] > figures[None]


def test_without_a_receiver_reports_go_to_the_skae_logger(caplog):
    with caplog.at_level(logging.INFO, logger="skae"), watch(every=4):
        KSparseAutoencoder(16, k=2, batch_size=64, max_iter=1).fit(low_rank())
    lines = [r.getMessage() for r in caplog.records if "FVU" in r.getMessage()]
    assert lines and lines[0].startswith("step 4 (epoch 1): loss ")
    assert "L0 2," in lines[0] and "dead " in lines[0]


def test_outside_the_block_nothing_is_watched():
    reports = []
    with watch(reports.append, every=1):
        pass
    KSparseAutoencoder(16, k=2, max_iter=1).fit(low_rank())
    assert reports == []


def test_bad_arguments_fail_before_any_fit():
    with pytest.raises(InvalidParameterError, match="every"):
        with watch(print, every=0):
            pass
    with pytest.raises(InvalidParameterError, match="receiver"):
        with watch("print"):
            pass


def test_tensorboard_writes_one_new_run_per_fit_and_overwrites_none(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "fit-1").mkdir()
    (tmp_path / "fit-1" / "mine.txt").write_text("keep")
    reports = []
    with watch(reports.append, every=3, tensorboard=tmp_path):
        for seed in (0, 1):
            KSparseAutoencoder(
                16, k=2, batch_size=64, max_iter=1, random_state=seed
            ).fit(low_rank())
    assert (tmp_path / "fit-1" / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit-1", "fit-2", "fit-3"]
    events = EventAccumulator(str(tmp_path / "fit-3"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss", "l0", "fvu", "dead_fraction"}
    fvu = [(e.step, e.value) for e in events.Scalars("fvu")]
    second = reports[len(reports) // 2 :]
    assert fvu == [(r.step, pytest.approx(r.fvu, rel=1e-6)) for r in second]


def test_tensorboard_missing_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        with watch(tensorboard="runs"):
            pass


def test_metrics_read_as_a_dict():
    metrics = StepMetrics(3, 1, 100, 0.5, 2.0, 0.25, 0.0)
    assert metrics.as_dict() == {
        "step": 3,
        "epoch": 1,
        "rows": 100,
        "loss": 0.5,
        "l0": 2.0,
        "fvu": 0.25,
        "dead_fraction": 0.0,
    }
