"""How many times fit reads its data: once for its checks and mean, once
per epoch, and no pass after training where the last epoch tells all."""

import numpy as np
import pytest

from skae import KSparseAutoencoder, L1SparseAutoencoder
from skae._base import PROBE_ROWS
from skae._engine import data as data_module
from skae._engine import training as training_module


@pytest.fixture
def rows_read(monkeypatch):
    """The number of rows every read of the training data has copied."""
    counts = []
    original = data_module.RowSource.read

    def read(self, rows):
        chunk = original(self, rows)
        counts.append(chunk.shape[0])
        return chunk

    monkeypatch.setattr(data_module.RowSource, "read", read)
    return counts


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize(
    "make", [lambda: KSparseAutoencoder(64, k=3), lambda: L1SparseAutoencoder(64)]
)
def test_a_one_epoch_fit_reads_its_data_twice_and_its_probe_rows(
    sparse_data, rows_read, early_stopping, make
):
    """The checks and the sums of the mean in one pass (with early stopping,
    the held-out rows once more, whose sums are taken away); the probe
    batch, PROBE_ROWS rows however large the batches; the epoch (with
    early stopping, the training rows, then the evaluation of the held-out
    rows). No pass after training."""
    X = sparse_data.astype(np.float32)
    model = make().set_params(
        max_iter=1, batch_size=512, early_stopping=early_stopping, random_state=0
    )
    model.fit(X)
    assert PROBE_ROWS < 512 < len(X)
    held_out = len(X) // 10 if early_stopping else 0  # validation_fraction
    assert sum(rows_read) == 2 * len(X) + held_out + PROBE_ROWS


@pytest.mark.parametrize("batch_size", [PROBE_ROWS // 4, 4 * PROBE_ROWS])
def test_the_probe_is_the_first_training_rows_at_most_a_batch(
    sparse_data, monkeypatch, batch_size
):
    """The probe, judged before training and after every epoch, is the first
    training rows in order: a batch of them, or PROBE_ROWS where batches are
    larger (a whole 4096-row batch would cost a forward pass an epoch)."""
    X = sparse_data.astype(np.float32)
    probes = []
    original = training_module.probe_loss

    def probe_loss(module, probe):
        probes.append(probe.numpy().copy())
        return original(module, probe)

    monkeypatch.setattr(training_module, "probe_loss", probe_loss)
    KSparseAutoencoder(16, k=2, max_iter=2, batch_size=batch_size).fit(X)
    assert len(probes) == 3  # before training and after each epoch
    expected = X[: min(batch_size, PROBE_ROWS)]
    for probe in probes:
        np.testing.assert_array_equal(probe, expected)


def test_the_mean_from_the_checks_pass_is_the_training_rows_mean(sparse_data):
    """With validation rows held out, the input bias starts at the mean of
    the training rows alone, as a direct sum over them gives it."""
    X = sparse_data.astype(np.float32)
    sae = KSparseAutoencoder(16, k=2, max_iter=1, early_stopping=True, random_state=0)
    captured = {}
    original = KSparseAutoencoder._make_module

    def make_module(self, n_features, mean, generator):
        captured["mean"] = mean.numpy()
        return original(self, n_features, mean, generator)

    sae._make_module = make_module.__get__(sae)
    sae.fit(X)
    held_out = np.sort(np.random.RandomState(0).permutation(len(X))[: len(X) // 10])
    training = np.delete(X, held_out, axis=0).astype(np.float64)
    np.testing.assert_allclose(captured["mean"], training.mean(axis=0), rtol=1e-12)
