"""skae._engine.files: atomic writes, their temporaries and their checks, at
the edges the estimators' tests do not reach (found by mutation testing)."""

import os
import re
import stat
import threading

import pytest

import skae._engine.files as files
from skae._engine.files import (
    atomic_output,
    check_writable_folder,
    remove_stale_temporaries,
)


def dead_pid() -> int:
    """A process id that no running process has."""
    pid = 4_000_000  # above Linux's pid_max
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def test_an_odd_host_name_makes_a_plain_temporary_name_in_the_folder(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(files.socket, "gethostname", lambda: "lab/../node 7.local")
    with atomic_output(tmp_path / "out.bin") as file:
        (name,) = os.listdir(tmp_path)
        file.write(b"data")
    assert name.startswith(f".out.bin.skae-tmp-lab____node_7_local-{os.getpid()}-")
    assert re.fullmatch(r"[\w.-]+\.tmp", name)
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_stale_temporaries_go_and_everything_else_stays(tmp_path):
    target = tmp_path / "model.skae"
    prefix = files._temporary_prefix(target)
    stale = [f"{prefix}{dead_pid()}-abc.tmp", f"{prefix}{dead_pid()}-xyz.tmp"]
    kept = [
        f"{prefix}{os.getpid()}-own.tmp",  # this process may be writing it
        f"{prefix}{os.getppid()}-live.tmp",  # a live writer's
        f"{prefix}notapid-abc.tmp",  # not a name this module makes
        f"{prefix}{dead_pid()}-abc.txt",
        f".other.skae.skae-tmp-x-{dead_pid()}-abc.tmp",  # another file's
        "a-file-first-in-the-listing",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"")
    folder = tmp_path / f"{prefix}{dead_pid()}-dir.tmp"  # not a regular file
    folder.mkdir()
    remove_stale_temporaries(target)
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, folder.name])


def test_another_users_live_process_keeps_its_temporary(tmp_path, monkeypatch):
    target = tmp_path / "model.skae"
    name = f"{files._temporary_prefix(target)}{dead_pid()}-abc.tmp"
    (tmp_path / name).write_bytes(b"")

    def not_yours(pid, signal):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(files.os, "kill", not_yours)
    remove_stale_temporaries(target)
    assert os.listdir(tmp_path) == [name]


def test_cleaning_a_folder_that_cannot_be_listed_is_no_error(tmp_path):
    remove_stale_temporaries(tmp_path / "missing" / "model.skae")


def test_a_replaced_file_keeps_its_read_and_write_bits_only(tmp_path):
    target = tmp_path / "run.sh"
    target.write_bytes(b"old")
    os.chmod(target, 0o775)
    with atomic_output(target) as file:
        file.write(b"new")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o664
    assert target.read_bytes() == b"new"


def test_the_umask_is_read_without_being_changed(monkeypatch):
    real = os.umask(0o027)
    os.umask(0o027)
    try:
        # On Linux it comes from /proc: os.umask is never called, as setting
        # it would race with other threads creating files.
        def racy(mask):
            raise AssertionError("os.umask was called")

        with monkeypatch.context() as patch:
            patch.setattr(files.os, "umask", racy)
            assert files._umask() == 0o027

        # Without /proc, it is set and restored.
        def no_proc(*args, **kwargs):
            raise OSError(2, "No such file or directory")

        monkeypatch.setattr(files, "open", no_proc, raising=False)
        assert files._umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(real)


def test_the_folder_is_synced_and_a_failed_sync_loses_nothing(tmp_path, monkeypatch):
    synced = []
    original = os.fsync

    def fsync(fd):
        mode = os.fstat(fd).st_mode
        synced.append("folder" if stat.S_ISDIR(mode) else "file")
        if stat.S_ISDIR(mode):
            raise OSError(22, "Invalid argument")  # some file systems refuse
        original(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    with atomic_output(tmp_path / "out.bin") as file:
        file.write(b"data")
    assert synced == ["file", "folder"]
    assert (tmp_path / "out.bin").read_bytes() == b"data"


def test_check_writable_folder_names_the_path_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError) as error:
        check_writable_folder(tmp_path, "checkpoint_path")
    assert str(error.value) == (
        f"checkpoint_path={str(tmp_path)!r} is a folder; give a file name in it."
    )
    missing = tmp_path / "missing" / "out.npy"
    with pytest.raises(ValueError) as error:
        check_writable_folder(missing, "-o")
    assert str(error.value) == (
        f"-o={str(missing)!r} cannot be written: No such file or directory in "
        f"folder {str(missing.parent)!r}. Create the folder or choose another path."
    )
    with pytest.raises(ValueError, match=r"^-o='' is not a file name\.$"):
        check_writable_folder("", "-o")


def test_the_writability_probe_is_a_temporary_the_cleaner_knows(tmp_path, monkeypatch):
    # If the process dies between creating and deleting its probe, the next
    # write to the same destination removes it as a stale temporary.
    probes = []

    def dies_here(path):
        probes.append(os.path.basename(path))
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "unlink", dies_here)
    with pytest.raises(KeyboardInterrupt):
        check_writable_folder(tmp_path / "model.skae", "path")
    monkeypatch.undo()
    (probe,) = probes
    assert files._writer_pid(probe, files._temporary_prefix(tmp_path / "model.skae"))
    assert probe.endswith(".tmp")


def test_writers_in_two_threads_never_see_each_others_temporaries(tmp_path):
    target = tmp_path / "out.bin"
    errors = []

    def write(payload):
        try:
            for _ in range(20):
                with atomic_output(target) as file:
                    file.write(payload)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(b"a" * n,)) for n in (10, 20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in (b"a" * 10, b"a" * 20)
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_temporary_that_vanishes_while_cleaning_is_no_error(tmp_path, monkeypatch):
    # Another process may remove a stale temporary between listing and unlink.
    target = tmp_path / "model.skae"
    prefix = files._temporary_prefix(target)
    names = [f"{prefix}{dead_pid()}-{tag}.tmp" for tag in ("aaa", "bbb")]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    original, calls = os.unlink, []

    def raced(path):
        calls.append(path)
        if len(calls) == 1:
            original(path)
            raise FileNotFoundError(2, "No such file or directory")
        original(path)

    monkeypatch.setattr(files.os, "unlink", raced)
    remove_stale_temporaries(target)
    assert len(calls) == 2 and os.listdir(tmp_path) == []
