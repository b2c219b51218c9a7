"""Checkpoints: saved every few epochs, resumed exactly, refused when foreign."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.model_selection import cross_val_score

import skae._engine.checkpoint
import skae._engine.training
from skae import KSparseAutoencoder, StackedSparseAutoencoder
from skae._engine.checkpoint import load_checkpoint

# Resumed fits announce themselves; test_resuming_says_so checks the message.
pytestmark = pytest.mark.filterwarnings("ignore:Resuming:UserWarning")


def model(path, **params):
    defaults = {
        "n_components": 16,
        "k": 4,
        "max_iter": 6,
        "tol": 0.0,
        "n_iter_no_change": 100,
        "random_state": 0,
        "checkpoint_path": path,
        # These tests resume with max_iter changed, which stretches a
        # decaying schedule; test_a_fit_resumes_from_the_middle_of_an_epoch
        # resumes a cosine one.
        "learning_rate_schedule": "constant",
        "warmup": 0.0,
    }
    return KSparseAutoencoder(**(defaults | params))


def assert_same_model(a, b):
    assert a.n_iter_ == b.n_iter_
    assert a.loss_curve_ == b.loss_curve_
    for name, value in a.module_.state_dict().items():
        np.testing.assert_array_equal(
            value.numpy(), b.module_.state_dict()[name].numpy()
        )


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_resumed_fit_ends_as_an_uninterrupted_one(
    count_epochs, sparse_data, tmp_path, monkeypatch, early_stopping
):
    path = tmp_path / "run.ckpt"
    whole = model(None, early_stopping=early_stopping).fit(sparse_data)
    model(path, max_iter=3, early_stopping=early_stopping).fit(sparse_data)
    epochs = count_epochs()
    resumed = model(path, early_stopping=early_stopping).fit(sparse_data)
    assert len(epochs) == 3
    assert_same_model(resumed, whole)
    if early_stopping:
        assert resumed.validation_scores_ == whole.validation_scores_


def test_checkpoints_every_interval_and_at_the_end(sparse_data, tmp_path, monkeypatch):
    saved_epochs = []
    original = skae._engine.checkpoint.save_checkpoint

    def recording(path, checkpoint):
        saved_epochs.append(checkpoint.loop.history.n_epochs)
        original(path, checkpoint)

    monkeypatch.setattr(skae._base, "save_checkpoint", recording)
    model(tmp_path / "c.ckpt", max_iter=5, checkpoint_interval=2).fit(sparse_data)
    assert saved_epochs == [2, 4, 5]


def test_resume_after_ctrl_c_continues_from_the_last_checkpoint(
    count_epochs, interrupt, sparse_data, tmp_path
):
    path = tmp_path / "run.ckpt"
    whole = model(None).fit(sparse_data)
    with interrupt(epoch=4):
        with pytest.warns(RuntimeWarning, match="interrupted after 3 epoch"):
            stopped = model(path).fit(sparse_data)
    assert stopped.n_iter_ == 3
    epochs = count_epochs()
    assert_same_model(model(path).fit(sparse_data), whole)
    assert len(epochs) == 3


def test_a_finished_checkpoint_trains_no_more(count_epochs, sparse_data, tmp_path):
    path = tmp_path / "run.ckpt"
    first = model(path).fit(sparse_data)
    epochs = count_epochs()
    assert_same_model(model(path).fit(sparse_data), first)
    assert epochs == []


def test_a_run_that_stopped_early_trains_no_more_when_resumed(
    count_epochs, hook, sparse_data, tmp_path
):
    path = tmp_path / "run.ckpt"
    # A tol no epoch can meet: the rule stops after epoch 1 + 1.
    stopping = {"tol": 0.9, "n_iter_no_change": 1}
    starts = []
    hook(train_begin=lambda state, module: starts.append(state.start_loss))
    first = model(path, **stopping).fit(sparse_data)
    assert first.n_iter_ == 2 < first.max_iter
    epochs = count_epochs()
    assert_same_model(model(path, **stopping).fit(sparse_data), first)
    assert epochs == []
    # The resumed loop judges divergence against the first run's start.
    assert len(starts) == 2 and starts[1] == starts[0]


def test_a_resumed_run_keeps_the_loss_its_divergence_is_judged_by(
    hook, interrupt, sparse_data, tmp_path
):
    path = tmp_path / "run.ckpt"
    starts = []
    hook(train_begin=lambda state, module: starts.append(state.start_loss))
    with interrupt(epoch=4):
        with pytest.warns(RuntimeWarning, match="interrupted after 3 epoch"):
            model(path).fit(sparse_data)
    model(path).fit(sparse_data)
    assert len(starts) == 2 and math.isfinite(starts[0])
    assert starts[1] == starts[0]  # not the loss of the model after 3 epochs


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 3}, "k: 4 saved, 3 now"),
        ({"estimator": "stacked"}, "estimator: 'KSparseAutoencoder' saved"),
        ({"rows": 100}, r"data_shape: \[2000, 32\] saved, \[100, 32\] now"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused(sparse_data, tmp_path, change, message):
    path = tmp_path / "run.ckpt"
    model(path, max_iter=2).fit(sparse_data)
    before = path.read_bytes()
    X = sparse_data[: change.get("rows", len(sparse_data))]
    if change.get("estimator") == "stacked":
        other = StackedSparseAutoencoder((8,), max_iter=2, checkpoint_path=path)
    else:
        other = model(path, **{k: v for k, v in change.items() if k == "k"})
    with pytest.raises(ValueError, match=message):
        other.fit(X)
    assert not hasattr(other, "module_")
    assert path.read_bytes() == before


def test_a_file_that_is_no_checkpoint_is_refused(sparse_data, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not a skae checkpoint"):
        model(path).fit(sparse_data)


def test_stacked_fine_tuning_resumes(count_epochs, interrupt, sparse_data, tmp_path):
    params = {"hidden_layer_sizes": (12, 6), "max_iter": 4, "tol": 0.0}
    params |= {"n_iter_no_change": 100, "random_state": 0}
    whole = StackedSparseAutoencoder(**params).fit(sparse_data)
    path = tmp_path / "stack.ckpt"
    # 4 + 4 pretraining epochs, then Ctrl-C in the third fine-tuning epoch.
    with interrupt(epoch=11):
        with pytest.warns(RuntimeWarning, match="interrupted after 2 epoch"):
            StackedSparseAutoencoder(**params, checkpoint_path=path).fit(sparse_data)
    epochs = count_epochs()
    resumed = StackedSparseAutoencoder(**params, checkpoint_path=path).fit(sparse_data)
    assert len(epochs) == 2  # no pretraining, two fine-tuning epochs
    assert_same_model(resumed, whole)
    assert resumed.pretrain_loss_curves_ == whole.pretrain_loss_curves_


def test_numpy_parameter_values_are_fingerprinted_by_value(sparse_data, tmp_path):
    path = tmp_path / "run.ckpt"
    model(path, n_components=np.int64(16), k=np.int64(4), max_iter=2).fit(sparse_data)
    with pytest.raises(ValueError, match="k: 4 saved, 2 now; n_components: 16 saved"):
        model(path, n_components=np.int64(32), k=np.int64(2)).fit(sparse_data)
    # The same values as plain ints resume.
    assert model(path, max_iter=3).fit(sparse_data).n_iter_ == 3


def test_a_tuple_and_a_list_of_layer_sizes_are_the_same_run(
    count_epochs, sparse_data, tmp_path
):
    path = tmp_path / "stack.ckpt"
    params = {"max_iter": 2, "random_state": 0, "checkpoint_path": path}
    first = StackedSparseAutoencoder((8,), **params).fit(sparse_data)
    epochs = count_epochs()
    with pytest.warns(UserWarning, match="Resuming.*2 epoch"):
        again = StackedSparseAutoencoder([8], **params).fit(sparse_data)
    assert epochs == []  # the finished run, resumed: nothing left to train
    assert_same_model(again, first)


def test_resume_without_a_seed_keeps_the_validation_rows(sparse_data, tmp_path):
    path = tmp_path / "run.ckpt"
    params = {"random_state": None, "early_stopping": True}
    model(path, max_iter=2, **params).fit(sparse_data)
    before = load_checkpoint(path).rows[1].indices.copy()
    model(path, max_iter=4, **params).fit(sparse_data)
    after = load_checkpoint(path)
    assert after.loop.history.n_epochs == 4
    np.testing.assert_array_equal(after.rows[1].indices, before)


def test_a_checkpoint_path_that_cannot_be_written_is_refused_before_training(
    count_epochs, sparse_data, tmp_path, monkeypatch
):
    epochs = count_epochs()
    for path, message in [
        (tmp_path / "missing-directory" / "run.ckpt", "cannot be written"),
        ("", "is not a file name"),
    ]:
        with pytest.raises(ValueError, match=f"checkpoint_path=.*{message}"):
            model(path, max_iter=2).fit(sparse_data)
    assert epochs == []
    assert list(tmp_path.iterdir()) == []


def test_a_failed_checkpoint_write_warns_and_training_goes_on(
    sparse_data, tmp_path, monkeypatch
):
    def disk_full(path, checkpoint):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(skae._base, "save_checkpoint", disk_full)
    with pytest.warns(RuntimeWarning, match="Could not write the checkpoint.*space"):
        sae = model(tmp_path / "run.ckpt", max_iter=2).fit(sparse_data)
    assert sae.n_iter_ == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "schedule",
    [
        {"learning_rate_schedule": "constant"},
        # Its warm-up ends, and its decay begins, after the saved step.
        {"learning_rate_schedule": "cosine", "warmup": 0.5},
    ],
)
def test_a_fit_resumes_from_the_middle_of_an_epoch(
    count_steps, interrupt, sparse_data, tmp_path, schedule
):
    # 2000 rows in batches of 100: 20 steps an epoch, saved every 5.
    params = {"max_iter": 3, "batch_size": 100, "checkpoint_interval": 0.25}
    params |= schedule
    whole = model(None, **params).fit(sparse_data)
    path = tmp_path / "run.ckpt"
    with interrupt(step=38):  # in the second epoch, after step 15 of it
        with pytest.warns(RuntimeWarning, match="interrupted after 1 epoch"):
            model(path, **params).fit(sparse_data)
    saved = load_checkpoint(path)
    assert saved.loop.history.n_epochs == 1
    assert saved.loop.partial.steps == 15
    assert saved.loop.steps == 35
    steps = count_steps()
    resumed = model(path, **params).fit(sparse_data)
    assert len(steps) == 5 + 20  # the rest of epoch 2, then epoch 3
    assert_same_model(resumed, whole)


def test_fractional_interval_saves_inside_epochs(sparse_data, tmp_path, monkeypatch):
    saved = []
    original = skae._engine.checkpoint.save_checkpoint

    def recording(path, checkpoint):
        partial = checkpoint.loop.partial
        saved.append((checkpoint.loop.history.n_epochs, partial and partial.steps))
        original(path, checkpoint)

    monkeypatch.setattr(skae._base, "save_checkpoint", recording)
    params = {"max_iter": 2, "batch_size": 500, "checkpoint_interval": 0.5}
    model(tmp_path / "c.ckpt", **params).fit(sparse_data)
    # 4 steps an epoch: after step 2, and at each epoch's end (not twice).
    assert saved == [(0, 2), (1, None), (1, 2), (2, None)]


@pytest.mark.parametrize("interval", [0, -0.5, 1.5])
def test_bad_checkpoint_intervals_are_refused(sparse_data, tmp_path, interval):
    with pytest.raises(ValueError, match="checkpoint_interval"):
        model(tmp_path / "c.ckpt", checkpoint_interval=interval).fit(sparse_data)


def test_a_diverging_run_never_saves_nan_weights_mid_epoch(sparse_data, tmp_path):
    from skae._engine.training import TrainingDivergedError

    path = tmp_path / "run.ckpt"
    params = {"learning_rate": 1e38, "batch_size": 100, "checkpoint_interval": 0.5}
    # Caught at the first mid-epoch save, and named by its epoch.
    with pytest.raises(TrainingDivergedError, match=r"diverged: .* in epoch 1\."):
        model(path, **params).fit(sparse_data)
    if path.exists():  # any checkpoint written holds finite weights
        for weights in load_checkpoint(path).module["tensors"].values():
            assert torch.isfinite(weights).all()


def test_a_resumed_fit_with_dead_latents_ends_as_an_uninterrupted_one(
    count_epochs, sparse_data, tmp_path
):
    # Wide and sparse: latents die within the first epoch, so the auxiliary
    # loss trains them at every step, from the dead set of its last refresh.
    params = {"n_components": 96, "k": 1, "aux_k": 8, "batch_size": 64}
    whole = model(None, **params).fit(sparse_data)
    assert int((whole.module_.rows_since_fired >= 2000).sum()) > 0
    path = tmp_path / "run.ckpt"
    # Stopped after the first epoch: its dead set, refreshed at step 31 of
    # 32, is not the one a refresh at the resumed step would find.
    model(path, **params, max_iter=1).fit(sparse_data)
    epochs = count_epochs()
    resumed = model(path, **params).fit(sparse_data)
    assert len(epochs) == 5
    assert_same_model(resumed, whole)


# ------------------------------------------------------------------ safety


class _Payload:
    """Unpickling this touches ``marker``: proof that a load ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_resuming_says_so(sparse_data, tmp_path):
    path = tmp_path / "run.ckpt"
    model(path, max_iter=2).fit(sparse_data)
    with pytest.warns(
        UserWarning,
        match=r"Resuming KSparseAutoencoder from .*run\.ckpt'"
        r": 2 epoch\(s\) done",
    ):
        model(path, max_iter=3).fit(sparse_data)


def test_a_pickled_checkpoint_is_refused_without_running_it(sparse_data, tmp_path):
    path, marker = tmp_path / "run.ckpt", tmp_path / "code-ran"
    torch.save({"module": _Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"is a pickle.*runs code"):
        model(path).fit(sparse_data)
    assert not marker.exists()


def forged(path, tree):
    """A checkpoint file holding ``tree`` as its JSON, in the current format."""
    from skae._engine.serialize import write_file

    metadata = {"format": "skae.checkpoint", "format_version": "1"}
    write_file(path, {}, metadata | {"checkpoint": json.dumps(tree)})


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"__record__": "system", "fields": {}}, "unknown stored type 'system'"),
        ({"__weird__": 1, "x": 2}, "unknown stored value"),
        ({"module": {"__tensor__": "W_enc"}}, "tensor 'W_enc' is missing"),
        ([1, 2], "not a skae checkpoint"),
    ],
)
def test_a_forged_checkpoint_builds_nothing_but_data(
    sparse_data, tmp_path, tree, message
):
    path = tmp_path / "run.ckpt"
    forged(path, tree)
    with pytest.raises(ValueError, match=message):
        model(path).fit(sparse_data)


def test_a_checkpoint_cannot_set_a_modules_methods(sparse_data, tmp_path):
    path = tmp_path / "run.ckpt"
    model(path, max_iter=1).fit(sparse_data)
    saved = load_checkpoint(path)
    saved.module["attributes"][""]["forward"] = "not a method"
    skae._engine.checkpoint.save_checkpoint(path, saved)
    with pytest.raises(ValueError, match="attribute 'forward' cannot be set"):
        model(path, max_iter=2).fit(sparse_data)


def test_a_checkpoint_of_other_data_of_the_same_shape_is_refused(sparse_data, tmp_path):
    path = tmp_path / "run.ckpt"
    model(path, max_iter=2).fit(sparse_data)
    before = path.read_bytes()
    other = sparse_data.copy()
    other[1234, 5] += 1e-6  # one value, in a row the sample always holds
    with pytest.raises(ValueError, match="data: other rows of the same shape"):
        model(path, max_iter=3).fit(other)
    with pytest.raises(ValueError, match="data_dtype: 'float64' saved, 'float32' now"):
        model(path, max_iter=3).fit(sparse_data.astype(np.float32))
    assert path.read_bytes() == before


def test_cross_validation_never_scores_a_fold_with_another_folds_model(
    sparse_data, tmp_path
):
    X = sparse_data[:1000]
    plain = cross_val_score(model(None, max_iter=2), X, cv=5)
    # One file shared by the folds: every fold after the first is refused.
    shared = model(tmp_path / "shared.ckpt", max_iter=2)
    with pytest.raises(ValueError, match=r"holds another run.*data: other rows"):
        cross_val_score(shared, X, cv=5, error_score="raise")
    # A folder: each fold trains, saves and later resumes its own run.
    folder = tmp_path / "runs"
    folder.mkdir()
    first = cross_val_score(model(folder, max_iter=2), X, cv=5)
    np.testing.assert_array_equal(first, plain)
    assert len(list(folder.glob("KSparseAutoencoder-*.ckpt"))) == 5
    with pytest.warns(UserWarning, match="Resuming") as resumed:
        again = cross_val_score(model(folder, max_iter=2), X, cv=5)
    assert sum("Resuming" in str(w.message) for w in resumed) == 5
    np.testing.assert_array_equal(again, plain)


def test_a_planted_link_is_never_followed(sparse_data, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "run.ckpt"
    # The fixed temporary name of earlier versions, and names like today's.
    for name in ["run.ckpt.partial", f"{_prefix('run.ckpt')}{os.getpid()}-x.tmp"]:
        (tmp_path / name).symlink_to(victim)
    model(path, max_iter=2).fit(sparse_data)
    assert victim.read_text() == "precious"
    assert load_checkpoint(path).loop.history.n_epochs == 2
    # A link at the checkpoint's own name is read, found foreign, and kept.
    link = tmp_path / "linked.ckpt"
    link.symlink_to(victim)
    with pytest.raises(ValueError, match="not a skae checkpoint"):
        model(link).fit(sparse_data)
    assert victim.read_text() == "precious" and link.is_symlink()


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    from skae._engine.files import atomic_output

    path = tmp_path / "run.ckpt"
    dead_pid = _dead_pid()
    dead = tmp_path / f"{_prefix('run.ckpt')}{dead_pid}-abc.tmp"
    live = tmp_path / f"{_prefix('run.ckpt')}{os.getppid()}-def.tmp"
    other = tmp_path / f"{_prefix('other')}{dead_pid}-ghi.tmp"
    # On a shared file system, another host's process ids mean nothing here.
    elsewhere = tmp_path / f".run.ckpt.skae-tmp-otherhost-{dead_pid}-jkl.tmp"
    for file in (dead, live, other, elsewhere):
        file.write_bytes(b"half")
    with atomic_output(path) as file:
        file.write(b"whole")
    assert path.read_bytes() == b"whole"
    assert not dead.exists()
    assert live.exists() and other.exists() and elsewhere.exists()


def _prefix(name: str) -> str:
    from skae._engine.files import _temporary_prefix

    return _temporary_prefix(Path(name))


def test_a_new_file_takes_the_umask_or_the_replaced_files_mode_never_a_links(
    tmp_path,
):
    from skae._engine.files import atomic_output

    target = tmp_path / "target"
    target.write_bytes(b"x")
    target.chmod(0o6777)
    link = tmp_path / "link"
    link.symlink_to(target)
    with atomic_output(link) as file:
        file.write(b"new")
    umask = os.umask(0o022)
    os.umask(umask)
    assert (link.stat().st_mode & 0o7777) == 0o666 & ~umask
    assert not link.is_symlink() and target.read_bytes() == b"x"
    kept = tmp_path / "kept"
    kept.write_bytes(b"x")
    kept.chmod(0o640)
    with atomic_output(kept) as file:
        file.write(b"new")
    assert (kept.stat().st_mode & 0o7777) == 0o640


def test_a_named_pipe_at_the_checkpoint_path_is_refused_not_waited_on(
    sparse_data, tmp_path
):
    fifo = tmp_path / "run.ckpt"
    os.mkfifo(fifo)
    # A regression would block in open(): fail then, do not hang.
    previous = signal.signal(signal.SIGALRM, _blocked)
    signal.alarm(60)
    try:
        with pytest.raises(ValueError, match="not a regular file"):
            model(fifo).fit(sparse_data)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _blocked(signum, frame):
    raise TimeoutError("blocked reading a named pipe")


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


KILLED_WRITER = """
import os, signal, sys
import numpy as np
import skae._engine.serialize as serialize
from skae import KSparseAutoencoder

written = []
original = serialize._write_tensor


def dies_in_the_second_write(file, tensor):
    written.append(1)
    if len(written) == n_tensors + 2:  # the second file, its second tensor
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    original(file, tensor)


n_tensors = int(sys.argv[2])
serialize._write_tensor = dies_in_the_second_write
X = np.random.RandomState(0).randn(400, 16)
KSparseAutoencoder(64, k=4, max_iter=5, checkpoint_path=sys.argv[1],
                   learning_rate_schedule="constant", warmup=0.0,
                   random_state=0).fit(X)
"""


def test_sigkill_while_writing_leaves_the_last_whole_checkpoint(tmp_path, python_env):
    path = tmp_path / "run.ckpt"
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    X = np.random.RandomState(0).randn(400, 16)
    one_epoch = tmp_path / "one.ckpt"
    model(one_epoch, n_components=64, max_iter=1).fit(X)
    from skae._engine.serialize import read_file

    n_tensors = len(read_file(one_epoch)[0])
    killed = subprocess.run(
        [sys.executable, str(script), str(path), str(n_tensors)], env=python_env
    )
    assert killed.returncode == -signal.SIGKILL
    # The kill came in the middle of the second checkpoint: the first is whole.
    assert load_checkpoint(path).loop.history.n_epochs == 1
    leftovers = list(tmp_path.glob(f"{_prefix('run.ckpt')}*.tmp"))
    assert len(leftovers) == 1
    # The next run resumes, and its first write clears the dead writer's file.
    with pytest.warns(UserWarning, match="1 epoch"):
        model(path, n_components=64, max_iter=5, tol=1e-4, n_iter_no_change=10).fit(X)
    assert not leftovers[0].exists()
    assert load_checkpoint(path).loop.history.n_epochs == 5


def test_a_checkpoint_of_a_newer_format_asks_for_an_upgrade(sparse_data, tmp_path):
    from skae._engine.serialize import write_file

    path = tmp_path / "run.ckpt"
    metadata = {"format": "skae.checkpoint", "format_version": "2", "checkpoint": "{}"}
    write_file(path, {}, metadata)
    with pytest.raises(ValueError, match=r"checkpoint format 2.*upgrade skae"):
        model(path).fit(sparse_data)


@pytest.mark.parametrize(
    ("change", "epochs"),
    [
        ({"max_iter": 5}, 3),
        ({"tol": 10.0, "n_iter_no_change": 1}, 1),  # no epoch gains 10: stale
        ({"device": "cpu"}, 4),
        ({"precision": "bfloat16"}, 4),
        ({"verbose": 1}, 4),
        ({"checkpoint_interval": 0.5}, 4),
        ({"sparse_output": True}, 4),  # the form of transform's output
    ],
    ids=lambda value: "-".join(value) if isinstance(value, dict) else str(value),
)
def test_how_long_where_and_how_a_run_goes_may_change_on_resume(
    count_epochs, sparse_data, tmp_path, capsys, change, epochs
):
    path = tmp_path / "run.ckpt"
    model(path, max_iter=2).fit(sparse_data)
    whole = model(None).fit(sparse_data)
    counted = count_epochs()
    with pytest.warns(UserWarning, match="Resuming.*2 epoch"):
        resumed = model(path, **change).fit(sparse_data)
    assert len(counted) == epochs
    assert resumed.n_iter_ == 2 + epochs
    assert load_checkpoint(path).loop.history.n_epochs == 2 + epochs
    if change == {"device": "cpu"}:
        assert_same_model(resumed, whole)
    if "precision" in change:  # bfloat16 products: not the float32 run
        assert not np.array_equal(resumed.components_, whole.components_)
    if "verbose" in change:
        # The bar of rows starts at the saved epoch: 2 of 6 epochs of 2000.
        err = capsys.readouterr().err
        assert "| 4.00k/12.0k [" in err and "| 12.0k/12.0k [" in err
        assert "epoch=6/6" in err


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("module", [1], "module"),
        ("module", {"tensors": [], "attributes": {}}, "module tensors"),
        ("module", {"tensors": {}, "attributes": 3}, "module attributes"),
        ("optimizer", "adam", "optimizer"),
        ("loop", {"epochs": 3}, "loop"),
        ("rng", 0, "rng"),
        ("rows", (1, 2, 3), "rows"),
        ("rows", [1, 2], "rows"),
        ("fingerprint", None, "fingerprint"),
    ],
)
def test_a_checkpoint_with_a_part_of_the_wrong_kind_names_it(
    sparse_data, tmp_path, field, value, named
):
    from dataclasses import replace

    from skae._engine.checkpoint import save_checkpoint

    path = tmp_path / "run.ckpt"
    model(path, max_iter=1).fit(sparse_data)
    save_checkpoint(path, replace(load_checkpoint(path), **{field: value}))
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    assert str(error.value) == (
        f"checkpoint_path={str(path)!r} exists but is not a skae checkpoint "
        f"(its {named} are not as skae writes them); delete it or choose another "
        "path."
    )


def test_a_checkpoint_nested_too_deeply_names_the_reason(tmp_path):
    path = tmp_path / "run.ckpt"
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    metadata = {"format": "skae.checkpoint", "format_version": "1"}
    from skae._engine.serialize import write_file

    write_file(path, {}, metadata | {"checkpoint": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    assert str(error.value) == (
        f"checkpoint_path={str(path)!r} exists but is not a skae checkpoint "
        "(RecursionError); delete it or choose another path."
    )


def test_a_pickled_checkpoint_says_why_it_is_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    assert str(error.value) == (
        f"checkpoint_path={str(path)!r} exists but is not a skae checkpoint (it is "
        "a pickle, as skae wrote checkpoints before, and loading a pickle runs code "
        "from the file, so skae no longer reads them); delete it or choose another "
        "path."
    )


def test_sparse_data_is_fingerprinted_as_its_dense_rows():
    import scipy.sparse as sp

    from skae._engine.checkpoint import data_fingerprint

    dense = np.random.RandomState(0).rand(50, 6)
    dense[dense < 0.7] = 0
    assert data_fingerprint(sp.csr_matrix(dense)) == data_fingerprint(dense)
    changed = dense.copy()
    changed[49, 5] += 1.0
    assert data_fingerprint(sp.csr_matrix(changed)) != data_fingerprint(dense)


def test_data_beyond_the_sample_size_is_fingerprinted_by_a_spread_sample(
    monkeypatch,
):
    import skae._engine.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "SAMPLE_BYTES", 10 * 8 * 4)  # 10 rows of 4
    X = np.arange(100 * 4, dtype=np.float64).reshape(100, 4)
    before = checkpoint.data_fingerprint(X)
    # Rows 0, 11, 22, ..., 99 are sampled: a change there shows, between not.
    for row, shows in [(0, True), (11, True), (99, True), (5, False), (50, False)]:
        changed = X.copy()
        changed[row, 0] = -1.0
        after = checkpoint.data_fingerprint(changed)
        assert (after != before) == shows, row
    assert before["shape"] == [100, 4] and before["dtype"] == "float64"


def test_a_one_epoch_fit_resumed_mid_epoch_counts_every_row_it_trained_on(
    interrupt, sparse_data, tmp_path
):
    # The resumed epoch's own figures cover only its last 15 steps: the
    # statistics must come from a pass over all the rows instead.
    params = {"max_iter": 1, "batch_size": 100, "checkpoint_interval": 0.25}
    path = tmp_path / "run.ckpt"
    with interrupt(step=6):
        with pytest.warns(RuntimeWarning, match="interrupted"):
            model(path, **params).fit(sparse_data)
    assert load_checkpoint(path).loop.partial.steps == 5
    resumed = model(path, **params).fit(sparse_data)
    assert resumed.n_iter_ == 1
    # Every row has exactly k = 4 codes that fire.
    assert resumed.activation_frequency_.sum() == pytest.approx(4.0)


def test_a_run_interrupted_twice_in_one_epoch_resumes_each_time_where_it_stopped(
    interrupt, sparse_data, tmp_path
):
    # 20 steps an epoch, saved every 5: stopped in step 8, then 7 steps after
    # the resume at step 6, in step 13 of the same epoch.
    params = {"max_iter": 2, "batch_size": 100, "checkpoint_interval": 0.25}
    whole = model(None, **params).fit(sparse_data)
    path = tmp_path / "run.ckpt"
    for saved_at in (5, 10):
        with interrupt(step=8):
            with pytest.warns(RuntimeWarning, match="interrupted"):
                model(path, **params).fit(sparse_data)
        partial = load_checkpoint(path).loop.partial
        assert partial.steps == saved_at and partial.rows == 100 * saved_at
    assert_same_model(model(path, **params).fit(sparse_data), whole)


def test_an_epoch_without_batches_is_an_error():
    from skae._engine.training import train_epoch

    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^No training rows: the epoch had no batch"):
        train_epoch(module, optimizer, [])
