"""Check the training output path before the first iteration: a run that cannot save, or that would
silently replace an existing checkpoint, is refused at once with one line, not after hours of training.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class OutPathError(ValueError):
    """``--out`` cannot be written, or would replace a checkpoint without being asked to."""


def check_out(out, resume: bool = False, overwrite: bool = False) -> Path:
    """Refuse an ``out`` that is a folder, lies under a file, in a folder this user cannot write, or is an
    existing checkpoint (without ``resume`` or ``overwrite``); create its folder. A read-only checkpoint
    (no write permission bits) is a protected result: it is neither resumed nor overwritten."""
    out = Path(out)
    if out.is_dir():
        raise OutPathError(f"--out {out} is a folder: give a file path such as {out / 'run.pt'}")
    existing = out.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutPathError(f"--out {out} cannot be created: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "the default folder runs/ of --out" if str(out).startswith("runs/") else f"--out {out}"
        raise OutPathError(f"cannot write {what}: {existing.resolve()} is not writable by this user; pass an --out in "
                           "a folder you can write")
    if out.exists():
        if not out.is_file():
            raise OutPathError(f"--out {out} exists and is not a regular file; choose another --out")
        if not (overwrite or resume):
            raise OutPathError(f"{out} already exists: pass --resume to continue it, or --overwrite to replace it "
                               "with a new run (or choose another --out)")
        if not out.stat().st_mode & 0o222:
            raise OutPathError(f"{out} is read-only (mode {stat.S_IMODE(out.stat().st_mode):04o}), kept as a finished "
                               f"result: make it writable (chmod u+w {out}) to {'continue' if resume else 'replace'} "
                               "it, or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutPathError(f"cannot create the folder of --out {out} ({e.strerror}); choose another --out") from e
    return out
