"""Checkpoints: atomic writes (temporary file, flushed, then rename) and safe loads
(``weights_only=True``), with the content of a run checked before anything is allocated from it.

Introduced in notebook 04_maml.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from .atomic import atomic_write

SHIPPED = Path(__file__).resolve().parents[1] / "data"  # the checkpoints shipped with the course
FORMAT = "mamlkit-checkpoint"
VERSION = 1

# What a checkpoint's configuration may ask for: it decides the size of the model and of the task
# batches allocated when it is loaded, so a crafted file must not be able to ask for terabytes.
MAX_HIDDEN, MAX_LAYERS, MAX_WAYS, MAX_EXAMPLES, MAX_TASKS = 4096, 16, 1623, 1000, 100_000
INTS = ("iterations", "inner_steps", "meta_batch_size", "shots", "queries", "seed", "ways", "val_every",
        "val_tasks", "checkpoint_every")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or was not written by mamlkit."""


def shipped_checkpoint(algo: str, task: str = "sinusoid") -> Path:
    """Path of a checkpoint shipped in ``data/`` (made by the command in ``data/README.md``)."""
    path = SHIPPED / f"{task}-{algo}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the command in data/README.md to re-create it")
    return path


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` to ``path`` atomically: a crash never leaves a half-written file behind, and a
    failed write (a full disk) leaves the previous file as it was."""
    try:
        return atomic_write(path, lambda tmp: torch.save({"format": FORMAT, "version": VERSION, **state}, tmp))
    except OSError as e:
        kept = "the previous checkpoint there is intact" if Path(path).is_file() else "nothing was saved"
        raise CheckpointError(f"could not write {path} ({e.strerror or e}); {kept}") from e
    except RuntimeError as e:  # torch.save reports a full disk as a RuntimeError from its zip writer
        kept = "the previous checkpoint there is intact" if Path(path).is_file() else "nothing was saved"
        raise CheckpointError(f"could not write {path} ({_one_line(e)}); {kept}") from e


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


def load_run_state(path) -> dict:
    """A checkpoint of a training run, its content checked: the configuration (types and bounds),
    weights, random state, iteration and history. ``CheckpointError`` names what is wrong."""
    from .config import Config

    state = load_checkpoint(path)
    with broken_content(path):
        for key, kind in (("config", dict), ("model", dict), ("rng", dict), ("history", dict)):
            if not isinstance(state.get(key), kind):
                raise ValueError(f"its {key!r} entry is missing or not a {kind.__name__}")
        config = Config.from_dict(state["config"]).resolved()
        check_config_bounds(config)
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
            raise ValueError("its 'model' entry is not a dict of named tensors")
        if not isinstance(state.get("optimizer"), (dict, type(None))):
            raise ValueError("its 'optimizer' entry is not a dict")
        iteration = state.get("iteration")
        if isinstance(iteration, bool) or not isinstance(iteration, int) or not 0 <= iteration <= config.iterations:
            raise ValueError(f"its iteration {iteration!r} is not an integer in 0..{config.iterations}")
        rng = state["rng"].get("tasks")
        if not isinstance(rng, torch.Tensor):
            raise ValueError("its random state 'rng.tasks' is missing")
        torch.Generator().set_state(rng)  # raises on a state of the wrong size or type
    return state


def check_config_bounds(config) -> None:
    """Refuse sizes no mamlkit run uses (before a model or a task batch is allocated from them)."""
    for name in INTS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    for name in ("inner_lr", "outer_lr"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
    hidden = config.hidden
    if not (isinstance(hidden, tuple) and 1 <= len(hidden) <= MAX_LAYERS
            and all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_HIDDEN for h in hidden)):
        raise ValueError(f"hidden must be 1 to {MAX_LAYERS} layer sizes from 1 to {MAX_HIDDEN}, got {hidden!r}")
    limits = {"ways": MAX_WAYS, "shots": MAX_EXAMPLES, "queries": MAX_EXAMPLES, "meta_batch_size": MAX_TASKS,
              "val_tasks": MAX_TASKS}
    for name, limit in limits.items():
        if getattr(config, name) > limit:
            raise ValueError(f"{name} must be at most {limit}, got {getattr(config, name)}")
    if config.data_dir is not None and not isinstance(config.data_dir, str):
        raise ValueError(f"data_dir must be a path, got {config.data_dir!r}")


@contextmanager
def broken_content(path):
    """Turn any error while reading a run out of ``path`` into one ``CheckpointError`` line."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:  # wrong shapes, types, keys or random state: all a damaged or foreign file
        raise CheckpointError(f"{path} has the mamlkit checkpoint format but its content is broken "
                              f"({_one_line(e)}); re-train it or use another checkpoint") from e


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"
