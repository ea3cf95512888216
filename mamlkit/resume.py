"""What may change when a run is resumed, and what may not.

A resumed run is the same experiment continued: everything that defines it comes from the checkpoint,
never from the paper's defaults. Free to change: ``iterations`` (how far to train; it must exceed the
iterations done, and for Reptile ε is then annealed to 0 over the new total), the time limit, the data
location (``data_dir``), the device, logging and progress, and the validation and checkpoint cadence
(``val_every``, ``checkpoint_every``), the batched path's memory budget (``max_memory``), the loop's
parallel tasks (``workers``) and compiling the meta-gradient (``compiled``): how the same gradient is computed.
Changed with a warning: the step sizes ``inner_lr`` and ``outer_lr`` (to continue
a run that diverged with a smaller one). Everything else (task, algorithm, ways, shots, split, seed, ...) is
refused, naming the conflict.
"""

from __future__ import annotations

from dataclasses import fields, replace

from .config import Config

FREE = ("iterations", "data_dir", "val_every", "checkpoint_every", "max_memory", "workers", "compiled")
WARN = ("inner_lr", "outer_lr")
FIXED = tuple(f.name for f in fields(Config) if f.name not in FREE + WARN)


class ResumeConflict(ValueError):
    """A setting that defines the run differs from the checkpoint's."""


def merge(stored: Config, asked: dict, path, flag=lambda name: f"--{name.replace('_', '-')}") -> tuple[Config, list]:
    """The configuration to resume with: ``stored`` (the checkpoint's) with the settings the user
    explicitly ``asked`` for (name -> value; absent or ``None`` = keep the checkpoint's). Returns it and
    the warnings to show; ``ResumeConflict`` for a setting that may not change."""
    warnings = []
    changes = {}
    for name, value in asked.items():
        if value is None or value == getattr(stored, name):
            continue
        if name in FIXED:
            raise ResumeConflict(f"{flag(name)} {_show(value)} conflicts with {path}, which was trained with "
                                 f"{name} = {_show(getattr(stored, name))}: a resumed run keeps it; drop "
                                 f"{flag(name)}, or start a new run with another --out")
        if name in WARN:
            warnings.append(f"warning: {flag(name)} changes from {getattr(stored, name)} to {value} for the rest "
                            f"of {path}: the result is no longer one run with one set of hyper-parameters")
        changes[name] = value
    return replace(stored, **changes), warnings


def continue_with(run, config: Config) -> None:
    """Continue ``run`` (just loaded from a checkpoint) with ``config``: the settings that may change are
    taken from it (the outer optimizer's step size too), any other difference is a ``ResumeConflict``."""
    stored = run.config
    for name in FIXED:
        if getattr(config, name) != getattr(stored, name):
            raise ResumeConflict(f"{name} = {_show(getattr(config, name))} differs from the checkpoint's "
                                 f"{_show(getattr(stored, name))}: a resumed run keeps it")
    if config.iterations < run.iteration:
        raise ResumeConflict(f"the checkpoint is already at iteration {run.iteration}: ask for more iterations "
                             f"than that (got {config.iterations})")
    run.config = config
    if run.optimizer is not None:
        for group in run.optimizer.param_groups:
            group["lr"] = config.outer_lr


def _show(value) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)
