"""One training run per checkpoint: an exclusive ``fcntl`` lock on ``CHECKPOINT.lock`` beside it.

Two runs writing the same ``--out`` would both print "saved" while the file alternates between them;
the second one is refused at once instead. The lock file is removed when the run ends (the lock
follows the file's inode, so a run that opened a file just removed takes the lock again on the new one).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


class RunLocked(ValueError):
    """Another process is training into the same checkpoint."""


def lock_path(checkpoint) -> Path:
    return Path(f"{checkpoint}.lock")


@contextmanager
def run_lock(checkpoint):
    """Hold the lock of ``checkpoint`` for the ``with`` block; ``RunLocked`` if another run holds it.

    Creating the lock file is also the proof that the checkpoint's folder is writable (``OSError``).
    """
    path = lock_path(checkpoint)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = _read_owner(path)
            raise RunLocked(f"another run{owner} is training into {checkpoint} (it holds {path}); wait for it "
                            "to finish or stop it, or pass a different --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and our lock: try the new file
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _read_owner(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (process {pid})" if pid.isdigit() else ""
