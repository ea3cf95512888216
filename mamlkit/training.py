"""Meta-training for MAML, First-Order MAML, Reptile and the pretrained baseline (one loop, the
algorithm chosen by name), evaluation as mean ± 95% CI, and checkpoints that resume exactly.

Introduced in notebook 04_maml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import maml, reptile
from . import params as P
from .batched import adapt_batched, check_batchable
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config
from .models import MLP
from .tasks import TEST_SEED, Task, sample_sine_tasks, sine_test_tasks

VAL_SEED = TEST_SEED + 1
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def shipped_checkpoint(algo: str, task: str = "sinusoid") -> Path:
    """Path of a checkpoint shipped in ``data/`` (made by the command in ``data/README.md``)."""
    path = DATA_DIR / f"{task}-{algo}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the command in data/README.md to re-create it")
    return path


class TrainingDiverged(RuntimeError):
    """The loss (or the parameters) became non-finite."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    return device


def build_model(config: Config) -> nn.Module:
    return MLP((1, *config.hidden, 1))


def loss_function(task: str):
    return F.mse_loss if task == "sinusoid" else F.cross_entropy


def sample_tasks(config: Config, n: int, generator: torch.Generator, device) -> Task:
    return sample_sine_tasks(n, config.shots, config.queries, generator, device)


def joint_loss(model: nn.Module, params: P.Params, tasks: Task, loss_fn) -> Tensor:
    """The pretrained baseline's loss: all points of all tasks, no inner loop."""
    x = torch.cat([tasks.x_support, tasks.x_query], 1).flatten(0, 1)
    y = torch.cat([tasks.y_support, tasks.y_query], 1).flatten(0, 1)
    return loss_fn(P.forward(model, params, x), y)


def use_batched(config: Config, model: nn.Module) -> bool:
    """``batched=None`` means: batched when the model allows it; ``True`` insists (clear error)."""
    if config.batched is False or config.algo == "pretrain":
        return False
    try:
        check_batchable(model)
    except ValueError:
        if config.batched:
            raise
        return False
    return not (config.algo == "reptile" and config.inner_optimizer == "adam")


@dataclass
class Run:
    """Everything that changes during training; saved whole in each checkpoint."""

    config: Config
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    generator: torch.Generator
    iteration: int = 0
    history: dict | None = None

    def state(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "rng": {"tasks": self.generator.get_state()},
            "iteration": self.iteration,
            "history": self.history,
        }


def new_run(config: Config, device="cpu") -> Run:
    config = config.resolved()
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    optimizer = None if config.algo == "reptile" else torch.optim.Adam(model.parameters(), lr=config.outer_lr)
    generator = torch.Generator().manual_seed(config.seed)
    return Run(config, model, optimizer, generator, 0, {"iteration": [], "train_loss": [], "val_loss": []})


def load_run(path, device="cpu", iterations: int | None = None) -> Run:
    """Rebuild a run from a checkpoint (optionally extending its number of iterations)."""
    state = load_checkpoint(path, map_location=device)
    config = Config.from_dict(state["config"])
    if iterations is not None:
        config = Config.from_dict({**config.to_dict(), "iterations": iterations})
    run = new_run(config, device)
    run.model.load_state_dict(state["model"])
    if run.optimizer is not None:
        run.optimizer.load_state_dict(state["optimizer"])
    run.generator.set_state(state["rng"]["tasks"])
    run.iteration, run.history = state["iteration"], state["history"]
    return run


def load_model(path, device="cpu") -> tuple[nn.Module, Config]:
    """The trained model and its configuration from a checkpoint."""
    run = load_run(path, device)
    return run.model, run.config


def outer_step(run: Run, tasks: Task, batched: bool) -> Tensor:
    """One outer update of the configured algorithm; returns the loss it optimised."""
    cfg, model = run.config, run.model
    params, loss_fn = P.get_params(model), loss_function(cfg.task)
    if cfg.algo == "reptile":
        eps = cfg.outer_lr * (1 - run.iteration / cfg.iterations) if cfg.anneal else cfg.outer_lr
        new = reptile.reptile_step(model, params, tasks, loss_fn, cfg.inner_lr, cfg.inner_steps, eps,
                                   cfg.inner_optimizer, batched)
        move = P.norm(P.sub(new, params)).detach()  # |mean φ - θ| scaled by ε; NaN if diverged
        reptile.apply_params(params, new)
        return move
    run.optimizer.zero_grad(set_to_none=True)
    if cfg.algo == "pretrain":
        loss = joint_loss(model, params, tasks, loss_fn)
    else:
        loss = maml.maml_loss(model, params, tasks, loss_fn, cfg.inner_lr, cfg.inner_steps, cfg.first_order, batched)
    loss.backward()
    run.optimizer.step()
    return loss.detach()


def validation_loss(run: Run, tasks: Task) -> float:
    cfg = run.config
    result = evaluate(run.model, P.get_params(run.model), tasks, loss_function(cfg.task),
                      cfg.inner_lr if cfg.algo != "reptile" else 0.01, cfg.inner_steps, batched=None)
    return float(result.mean[-1])


def meta_train(config: Config, out=None, device="cpu", resume: bool = False, progress: bool = True,
               log_every: int = 100) -> Run:
    """Train with ``config``; checkpoint to ``out`` every ``checkpoint_every`` iterations.

    With ``resume=True`` and an existing ``out``, continue from it: the result equals an
    uninterrupted run. A non-finite loss raises ``TrainingDiverged`` before anything is saved.
    """
    device = resolve_device(device)
    config = config.resolved()
    if resume and out is not None and Path(out).exists():
        run = load_run(out, device, config.iterations)
    else:
        run = new_run(config, device)
    cfg = run.config
    batched = use_batched(cfg, run.model)
    val_tasks = sine_test_tasks(cfg.val_tasks, cfg.shots, 100, VAL_SEED, device)
    losses: list[Tensor] = []
    bar = tqdm(total=cfg.iterations, initial=run.iteration, disable=not progress, desc=f"{cfg.algo}")
    while run.iteration < cfg.iterations:
        tasks = sample_tasks(cfg, cfg.meta_batch_size, run.generator, device)
        losses.append(outer_step(run, tasks, batched))
        run.iteration += 1
        bar.update(1)
        done = run.iteration == cfg.iterations
        if len(losses) == log_every or done or run.iteration % cfg.checkpoint_every == 0:
            _check_finite(torch.stack(losses), run.iteration - len(losses), cfg)
            run.history["iteration"].append(run.iteration)
            run.history["train_loss"].append(float(torch.stack(losses).mean()))
            val = validation_loss(run, val_tasks) if run.iteration % cfg.val_every == 0 or done else math.nan
            run.history["val_loss"].append(val)
            bar.set_postfix(loss=f"{run.history['train_loss'][-1]:.3f}", val=f"{val:.3f}")
            losses = []
        if out is not None and (done or run.iteration % cfg.checkpoint_every == 0):
            save_checkpoint(run.state(), out)
    bar.close()
    return run


def _check_finite(losses: Tensor, first_iteration: int, cfg: Config) -> None:
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        it = first_iteration + int(bad[0]) + 1
        raise TrainingDiverged(
            f"training diverged at iteration {it}: the loss became non-finite. Lower --inner-lr "
            f"(now {cfg.inner_lr}) or --outer-lr (now {cfg.outer_lr}); the last checkpoint was kept")


@dataclass
class EvalResult:
    """Query metric after 0..k inner steps: per task, mean and 95% CI half-width."""

    steps: list
    per_task: Tensor  # (tasks, steps + 1)
    metric: str

    @property
    def mean(self) -> Tensor:
        return self.per_task.mean(0)

    @property
    def ci95(self) -> Tensor:
        return 1.96 * self.per_task.std(0, unbiased=True) / math.sqrt(self.per_task.shape[0])

    def at(self, step: int) -> tuple[float, float]:
        return float(self.mean[step]), float(self.ci95[step])


def _metric(pred: Tensor, y: Tensor, metric: str) -> Tensor:
    if metric == "accuracy":
        return (pred.argmax(-1) == y).float().mean(-1)
    return ((pred - y) ** 2).flatten(1).mean(-1)


def evaluate(model: nn.Module, params: P.Params, tasks: Task, loss_fn, inner_lr: float, inner_steps: int = 10,
             metric: str = "mse", batched: bool | None = None) -> EvalResult:
    """Adapt on each test task's support set for 1..``inner_steps`` SGD steps (first order, the
    same step size at every step) and report the query metric after each, as mean ± 95% CI.
    """
    maml.check_hyper(inner_lr, inner_steps)
    if batched is None:
        try:
            check_batchable(model)
            batched = True
        except ValueError:
            batched = False
    rows = []
    if batched:
        params = {k: v.detach().unsqueeze(0).expand(len(tasks), *v.shape) for k, v in params.items()}
        batch_forward = torch.func.vmap(lambda p, x: P.forward(model, p, x))
        for step in range(inner_steps + 1):
            with torch.no_grad():
                rows.append(_metric(batch_forward(params, tasks.x_query), tasks.y_query, metric))
            if step < inner_steps:
                params = _batched_step(model, params, tasks, loss_fn, inner_lr)
        return EvalResult(list(range(inner_steps + 1)), torch.stack(rows, 1).cpu(), metric)
    for task in tasks:
        adapted, row = P.detach(params), []
        for step in range(inner_steps + 1):
            with torch.no_grad():
                row.append(_metric(P.forward(model, adapted, task.x_query)[None], task.y_query[None], metric)[0])
            if step < inner_steps:
                adapted = P.detach(maml.inner_update(model, adapted, task.x_support, task.y_support, loss_fn,
                                                     inner_lr, first_order=True))
        rows.append(torch.stack(row))
    return EvalResult(list(range(inner_steps + 1)), torch.stack(rows).cpu(), metric)


def _batched_step(model, params, tasks, loss_fn, inner_lr):
    """One inner SGD step on every task at once; params carry a leading task dimension."""
    def one(p, x, y):
        g = torch.func.grad(lambda q: loss_fn(P.forward(model, q, x), y))(p)
        return {k: p[k] - inner_lr * g[k] for k in p}
    return torch.func.vmap(one)(params, tasks.x_support, tasks.y_support)


def evaluate_checkpoint(path, shots: int = 5, inner_steps: int = 10, inner_lr: float = 0.01, n_tasks: int = 600,
                        device="auto") -> dict:
    """The paper's test protocol on a saved model: fixed test tasks, fine-tune, mean ± 95% CI."""
    device = resolve_device(device)
    model, config = load_model(path, device)
    tasks = sine_test_tasks(n_tasks, shots, 100, TEST_SEED, device)
    result = evaluate(model, P.get_params(model), tasks, loss_function(config.task), inner_lr, inner_steps)
    return {"checkpoint": str(path), "algo": config.algo, "metric": result.metric,
            "mean": [float(v) for v in result.mean], "ci95": [float(v) for v in result.ci95]}
