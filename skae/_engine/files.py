"""Writing files so that nothing is lost: a new file appears whole or not at all.

Every file skae writes (checkpoints, saved models, the command line's codes)
goes through :func:`atomic_output`: a temporary file created exclusively in
the destination's folder (a link planted at a predictable name is never
followed), written, flushed to disk and renamed over the destination. A crash
or a kill mid-write leaves the previous file intact; temporaries of writers
that died are removed by the next write to the same destination.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _temporary_prefix(path: Path) -> str:
    """How this machine's temporaries for ``path`` start: on a shared file
    system, the process ids of other hosts mean nothing here."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())
    return f".{path.name}.skae-tmp-{host}-"


def _writer_pid(name: str, prefix: str) -> int | None:
    """The process id in a temporary's name ``<prefix><pid>-<random>.tmp``."""
    if not (name.startswith(prefix) and name.endswith(".tmp")):
        return None
    pid, _, _ = name[len(prefix) :].partition("-")
    return int(pid) if pid.isdigit() else None


def _is_running(pid: int) -> bool:
    try:
        # Signal 0 only asks whether the process exists. Not mutated: a
        # mutant's signal 1 would hang up the mutation runner itself.
        os.kill(pid, 0)  # pragma: no mutate
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete temporaries for ``path`` left by writers no longer running.

    Only regular files named like this host's temporaries of ``path`` go;
    a link is never followed, and a live writer's temporary is left alone.
    """
    path = Path(path)
    prefix = _temporary_prefix(path)
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            pid = _writer_pid(entry.name, prefix)
            if pid is None or pid == os.getpid() or _is_running(pid):
                continue
            with contextlib.suppress(OSError):
                if stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
                    os.unlink(entry.path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A new binary file that replaces ``path`` when the block ends cleanly.

    The file is a temporary in ``path``'s folder, created with ``O_EXCL`` (so
    never through a planted link); on success it is flushed, synced and
    renamed over ``path`` (which, if a link, is replaced, not followed). On
    any exception the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, temporary = tempfile.mkstemp(
        dir=path.parent,
        prefix=f"{_temporary_prefix(path)}{os.getpid()}-",
        suffix=".tmp",
    )
    try:
        # mkstemp makes the file private (0600); give it the mode any new
        # file gets here, or that of the file it replaces.
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "w+b") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    remove_stale_temporaries(path)
    _sync_folder(path.parent)


def _mode_for(path: Path) -> int:
    """The read and write permissions of the regular file ``path`` replaces,
    or those a new file gets from the umask (never a link target's)."""
    with contextlib.suppress(OSError):
        mode = os.lstat(path).st_mode
        if stat.S_ISREG(mode):
            return stat.S_IMODE(mode) & 0o666
    return 0o666 & ~_umask()


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:  # read without changing it
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable, where the system allows it."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_writable_folder(path: str | os.PathLike, what: str) -> None:
    """Raise ValueError, naming ``what``, unless a file can be created beside
    ``path`` (in its folder): proved by creating and deleting a temporary."""
    if str(path) == "" or Path(path).name == "":  # Path("") is "."
        raise ValueError(f"{what}={str(path)!r} is not a file name.")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what}={str(path)!r} is a folder; give a file name in it.")
    try:
        fd, probe = tempfile.mkstemp(
            dir=path.parent,
            prefix=f"{_temporary_prefix(path)}{os.getpid()}-",
            suffix=".tmp",
        )
    except OSError as exc:
        raise ValueError(
            f"{what}={str(path)!r} cannot be written: {exc.strerror or exc} in "
            f"folder {str(path.parent)!r}. Create the folder or choose another path."
        ) from None
    os.close(fd)
    os.unlink(probe)
