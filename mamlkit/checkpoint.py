"""Checkpoints: atomic writes (temporary file, then rename) and safe loads (``weights_only=True``).

Introduced in notebook 04_maml.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "mamlkit-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or was not written by mamlkit."""


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` to ``path`` atomically: a crash never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a mamlkit checkpoint with ``torch.load(weights_only=True)``; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train one with `python -m mamlkit train --out {path}`")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and weights-only errors all mean the same to a user
        raise CheckpointError(f"{path} is not a readable mamlkit checkpoint ({type(e).__name__}): "
                              "was it truncated or written by another program? Re-train or re-download it") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not a mamlkit checkpoint "
                              "(no 'format': 'mamlkit-checkpoint' entry); pass a file written by mamlkit train")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}, this mamlkit reads {VERSION}")
    return state
