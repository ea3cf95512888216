"""A training run: the configuration, the model, the outer optimizer, the task generator, the
iteration, the history and Reptile's kept inner state, saved whole in each checkpoint and rebuilt
from one exactly.

Introduced in notebook 04_maml.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from . import algorithms, families
from . import params as P
from .checkpoint import broken_content, load_run_state
from .config import Config
from .inner import AdamState


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    return device


@dataclass
class Run:
    """Everything that changes during training; saved whole in each checkpoint."""

    config: Config
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    generator: torch.Generator
    iteration: int = 0
    history: dict = field(default_factory=lambda: {"iteration": [], "train_loss": [], "val_metric": []})
    inner_state: AdamState | None = None  # Reptile's inner Adam state, when kept across tasks
    inner_params: dict = field(default_factory=dict)  # learned inner-loop parameters (Meta-SGD's α, MAML++'s)
    wall_seconds: list = field(default_factory=list)  # wall time of training at each history line, cumulative over
    # resumes (validation included; NaN for lines written before it was recorded); apart from the history, which
    # is the same for a resumed run and an uninterrupted one
    pending: dict = field(default_factory=dict)  # per-iteration diagnostics until the next history line (iMAML's
    # CG residual); not saved: every checkpoint follows a history line, which empties it

    @property
    def family(self) -> families.Family:
        return families.get(self.config.task).configured(self.config)

    def state(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "rng": {"tasks": self.generator.get_state()},
            "iteration": self.iteration,
            "history": self.history,
            "inner_state": None if self.inner_state is None else self.inner_state.state_dict(),
            "inner_params": {k: v.detach() for k, v in self.inner_params.items()},
            "wall_seconds": list(self.wall_seconds),
        }


def new_run(config: Config, device="cpu", model: nn.Module | None = None) -> Run:
    """A fresh run; ``model`` replaces the family's default model (any ``nn.Module``)."""
    config = config.resolved()
    torch.manual_seed(config.seed)
    family = families.get(config.task).configured(config)
    model = (family.model(config) if model is None else model).to(device)
    algorithm = algorithms.get(config.algo)
    inner_params = {} if algorithm is None else algorithm.inner_params(config, model)
    trained = [*model.parameters(), *inner_params.values()]
    fused = config.compiled or None  # --compile: one fused kernel for the outer Adam too
    optimizer = None if config.algo == "reptile" else torch.optim.Adam(trained, lr=config.outer_lr, fused=fused)
    inner_state = AdamState.zeros(P.get_params(model)) if config.keep_inner_state else None
    return Run(config, model, optimizer, torch.Generator().manual_seed(config.seed), inner_state=inner_state,
               inner_params=inner_params)


def load_run(path, device="cpu", iterations: int | None = None, model: nn.Module | None = None) -> Run:
    """Rebuild a run from a checkpoint (optionally extending its number of iterations)."""
    state = load_run_state(path)  # on the CPU: RNG states must stay CPU tensors; the model moves below
    with broken_content(path):  # wrong shapes or types: one CheckpointError line
        config = Config.from_dict(state["config"])
        if iterations is not None:
            config = replace(config, iterations=iterations)
        run = new_run(config, device, model)
        run.model.load_state_dict(state["model"])
        _load_inner_params(run, state.get("inner_params") or {})
        if run.optimizer is not None:
            run.optimizer.load_state_dict(state["optimizer"])
        run.generator.set_state(state["rng"]["tasks"])
        run.iteration, run.history = state["iteration"], state["history"]
        run.wall_seconds = [float(v) for v in state.get("wall_seconds") or []]
        if run.inner_state is not None and state.get("inner_state") is not None:  # older checkpoints: fresh state
            run.inner_state = AdamState.from_state_dict(state["inner_state"], device)
    return run


def _load_inner_params(run: Run, saved: dict) -> None:
    """Copy the saved learned inner-loop parameters into the run's (before the optimizer's state, which
    refers to them). A checkpoint written before they existed has none, and its algorithm needs none."""
    if saved.keys() != run.inner_params.keys():
        raise ValueError(f"its learned inner-loop parameters {sorted(saved)[:3]} do not match the "
                         f"{run.config.algo} run's {sorted(run.inner_params)[:3]}")
    with torch.no_grad():
        for k, v in run.inner_params.items():
            v.copy_(saved[k])


def load_model(path, device="cpu") -> tuple[nn.Module, Config]:
    """The trained model and its configuration from a checkpoint."""
    run = load_run(path, device)
    return run.model, run.config


