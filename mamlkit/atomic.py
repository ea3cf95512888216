"""Atomic file writes: write to a temporary file beside the target, flush it to disk, then rename
over it and flush the folder, so neither a crash nor a power loss leaves a half-written (or empty)
checkpoint or cache behind."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` to ``path`` (same folder, same filesystem).

    The new file keeps the permissions of the one it replaces (a new file gets the umask's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        _fsync(tmp)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600 files; these are ordinary files
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a folder; the rename is still atomic
        if not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def stale_temporaries(path) -> list[Path]:
    """Temporary files ``atomic_write`` left beside ``path`` when a process was killed mid-write."""
    path = Path(path)
    return sorted(path.parent.glob(f"{_glob_escape(path.name)}.*.tmp"))


def remove_stale_temporaries(path) -> list[Path]:
    """Remove them; call only while no other process writes ``path`` (e.g. holding its run lock)."""
    removed = stale_temporaries(path)
    for tmp in removed:
        tmp.unlink(missing_ok=True)
    return removed


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
