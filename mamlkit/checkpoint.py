"""Checkpoints: atomic writes (temporary file, then rename) and safe loads (``weights_only=True``).

Introduced in notebook 04_maml.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import atomic_write

SHIPPED = Path(__file__).resolve().parents[1] / "data"  # the checkpoints shipped with the course
FORMAT = "mamlkit-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or was not written by mamlkit."""


def shipped_checkpoint(algo: str, task: str = "sinusoid") -> Path:
    """Path of a checkpoint shipped in ``data/`` (made by the command in ``data/README.md``)."""
    path = SHIPPED / f"{task}-{algo}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the command in data/README.md to re-create it")
    return path


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` to ``path`` atomically: a crash never leaves a half-written file behind."""
    return atomic_write(path, lambda tmp: torch.save({"format": FORMAT, "version": VERSION, **state}, tmp))


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
    history = state.get("history")
    if isinstance(history, dict) and "val_loss" in history:  # written before the key said what it holds
        history["val_metric"] = history.pop("val_loss")
    return state
