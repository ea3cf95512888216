"""Meta-training for MAML, First-Order MAML, Reptile and the pretrained baseline (one loop, the
algorithm chosen by name), with checkpoints that resume exactly.

Introduced in notebook 04_maml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import distributed, maml, reptile
from . import params as P
from .adam import AdamState
from .batched import check_batchable, prefer_batched
from .checkpoint import broken_content, load_checkpoint, load_run_state, save_checkpoint  # noqa: F401 (API)
from .config import Config, eval_protocol
from .divergence import DivergenceGuard, TrainingDiverged  # noqa: F401  (TrainingDiverged is API)
from .evaluation import EvalResult, evaluate  # noqa: F401  (part of this module's API)
from .families import VAL_SEED, TrainingTasks, build_model, fixed_tasks, loss_function, metric_name  # noqa: F401
from .interrupt import Stop
from .resume import continue_with
from .tasks import Task

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def shipped_checkpoint(algo: str, task: str = "sinusoid") -> Path:
    """Path of a checkpoint shipped in ``data/`` (made by the command in ``data/README.md``)."""
    path = DATA_DIR / f"{task}-{algo}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the command in data/README.md to re-create it")
    return path


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    return device


def joint_loss(model: nn.Module, params: P.Params, tasks: Task, loss_fn) -> Tensor:
    """The pretrained baseline's loss: all points of all tasks, no inner loop."""
    x = torch.cat([tasks.x_support, tasks.x_query], 1).flatten(0, 1)
    y = torch.cat([tasks.y_support, tasks.y_query], 1).flatten(0, 1)
    return loss_fn(P.forward(model, params, x), y)


def use_batched(config: Config, model: nn.Module) -> bool:
    """``batched=None``: batched where it is faster (``prefer_batched``); ``True`` insists (clear error
    if the model cannot be batched)."""
    if config.batched is False or config.algo == "pretrain":
        return False
    if config.batched:
        check_batchable(model)
        return True
    return prefer_batched(model)


@dataclass
class Run:
    """Everything that changes during training; saved whole in each checkpoint."""

    config: Config
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    generator: torch.Generator
    iteration: int = 0
    history: dict = field(default_factory=lambda: {"iteration": [], "train_loss": [], "val_loss": []})
    inner_state: AdamState | None = None  # Reptile's inner Adam state, when kept across tasks

    def state(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "rng": {"tasks": self.generator.get_state()},
            "iteration": self.iteration,
            "history": self.history,
            "inner_state": None if self.inner_state is None else self.inner_state.state_dict(),
        }


def new_run(config: Config, device="cpu") -> Run:
    config = config.resolved()
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    optimizer = None if config.algo == "reptile" else torch.optim.Adam(model.parameters(), lr=config.outer_lr)
    inner_state = AdamState.zeros(P.get_params(model)) if config.keep_inner_state else None
    return Run(config, model, optimizer, torch.Generator().manual_seed(config.seed), inner_state=inner_state)


def load_run(path, device="cpu", iterations: int | None = None) -> Run:
    """Rebuild a run from a checkpoint (optionally extending its number of iterations)."""
    state = load_run_state(path)  # on the CPU: RNG states must stay CPU tensors; the model moves below
    with broken_content(path):  # wrong shapes or types: one CheckpointError line
        config = Config.from_dict(state["config"])
        if iterations is not None:
            config = Config.from_dict({**config.to_dict(), "iterations": iterations})
        run = new_run(config, device)
        run.model.load_state_dict(state["model"])
        if run.optimizer is not None:
            run.optimizer.load_state_dict(state["optimizer"])
        run.generator.set_state(state["rng"]["tasks"])
        run.iteration, run.history = state["iteration"], state["history"]
        if run.inner_state is not None and state.get("inner_state") is not None:  # older checkpoints: fresh state
            run.inner_state = AdamState.from_state_dict(state["inner_state"], device)
    return run


def load_model(path, device="cpu") -> tuple[nn.Module, Config]:
    """The trained model and its configuration from a checkpoint."""
    run = load_run(path, device)
    return run.model, run.config


def outer_step(run: Run, tasks: Task, batched: bool) -> Tensor:
    """One outer update of the configured algorithm; returns the loss it optimised (Reptile: |Δθ|).

    Under ``torchrun`` each process takes its share of ``tasks`` and the results are summed.
    """
    cfg, model = run.config, run.model
    params, loss_fn = P.get_params(model), loss_function(cfg.task)
    if cfg.inner_batch is not None:  # Reptile's mini-batches: drawn for all tasks, before sharding
        tasks = reptile.minibatch_order(tasks, cfg.inner_batch, cfg.inner_steps, run.generator)
    mine, weight = distributed.shard(tasks)
    if cfg.algo == "reptile":
        eps = cfg.outer_lr * (1 - run.iteration / cfg.iterations) if cfg.anneal else cfg.outer_lr
        state = run.inner_state
        step0 = 0 if state is None else state.step
        mean_phi = reptile.mean_adapted(model, params, mine, loss_fn, cfg.inner_lr, cfg.inner_steps,
                                        cfg.inner_optimizer, batched, cfg.inner_batch, state)
        if weight != 1.0:
            mean_phi = {k: v * weight for k, v in mean_phi.items()}
            distributed.all_reduce_(mean_phi.values())
            if state is not None:  # each process ran its share in sequence: average their states
                moments = [*state.exp_avg.values(), *state.exp_avg_sq.values()]
                for t in moments:
                    t.mul_(weight)
                distributed.all_reduce_(moments)
                state.step = step0 + cfg.inner_steps * (1 if batched else len(tasks))
        new = P.lerp(P.detach(params), mean_phi, eps)  # θ + ε (mean_i φ_i − θ)
        move = P.norm(P.sub(new, params)).detach()  # NaN if the step diverged
        reptile.apply_params(params, new)
        return move
    run.optimizer.zero_grad(set_to_none=True)
    if cfg.algo == "pretrain":
        loss = joint_loss(model, params, mine, loss_fn)
        (loss * weight).backward()
    else:
        loss = maml.meta_backward(model, params, mine, loss_fn, cfg.inner_lr, cfg.inner_steps, cfg.first_order,
                                  batched, scale=weight)
    distributed.all_reduce_([p.grad for p in params.values()])
    run.optimizer.step()
    return distributed.reduce_mean(loss.detach(), weight)


def validate(run: Run, tasks: Task) -> float:
    """Query MSE (or accuracy) on the fixed validation tasks after the test protocol's fine-tuning."""
    cfg = run.config
    protocol = eval_protocol(cfg.task, cfg.algo, cfg.ways)
    result = evaluate(run.model, P.get_params(run.model), tasks, loss_function(cfg.task), protocol["inner_lr"],
                      protocol["inner_steps"], metric_name(cfg.task), inner_optimizer=protocol["inner_optimizer"],
                      inner_state=_test_state(run, protocol))
    return float(result.mean[-1])


def _test_state(run: Run, protocol: dict) -> AdamState | None:
    """The kept inner Adam state, where the test protocol fine-tunes with Adam (else ``None``)."""
    return run.inner_state if protocol["inner_optimizer"] == "adam" else None


def meta_train(config: Config, out=None, device="cpu", resume: bool = False, progress: bool = True,
               log_every: int = 100, max_minutes: float | None = None) -> Run:
    """Train with ``config``; checkpoint to ``out`` every ``checkpoint_every`` iterations.

    With ``resume=True`` and an existing ``out``, continue from it: the result equals an
    uninterrupted run; the settings ``resume.continue_with`` allows may differ from the checkpoint's. A non-finite
    or exploding loss or state raises ``TrainingDiverged`` (``divergence``) before it is saved.
    ``max_minutes`` stops early (checkpointed, resumable) once that much wall time has passed; so does
    a SIGINT or SIGTERM under ``interrupt.stop_on_signals``.
    """
    stop = Stop(max_minutes)
    device = resolve_device(device)
    config = config.resolved()
    resuming = resume and out is not None and Path(out).exists()
    run = load_run(out, device, config.iterations) if resuming else new_run(config, device)
    if resuming:
        continue_with(run, config)  # refuses settings that may not change on resume
    cfg = run.config
    batched = use_batched(cfg, run.model)
    source = TrainingTasks(cfg, device)
    val_tasks = fixed_tasks(cfg, "val", cfg.val_tasks, eval_protocol(cfg.task, cfg.algo, cfg.ways)["shots"], device)
    guard = DivergenceGuard(run, val_tasks, loss_function(cfg.task))
    losses: list[Tensor] = []
    bar = tqdm(total=cfg.iterations, initial=run.iteration, disable=not (progress and distributed.is_main()),
               desc=cfg.algo)
    while run.iteration < cfg.iterations:
        losses.append(outer_step(run, source.sample(cfg.meta_batch_size, run.generator), batched))
        run.iteration += 1
        bar.update(1)
        done = run.iteration == cfg.iterations or stop.due()
        if len(losses) == log_every or done or run.iteration % cfg.checkpoint_every == 0:
            guard.check(run, torch.stack(losses))  # before any save: never a diverged checkpoint
            _log(run, torch.stack(losses), val_tasks, done, bar)
            losses = []
        if out is not None and distributed.is_main() and (done or run.iteration % cfg.checkpoint_every == 0):
            save_checkpoint(run.state(), out)
        if done:
            break
    bar.close()
    return run


def _log(run: Run, losses: Tensor, val_tasks: Task, done: bool, bar) -> None:
    cfg = run.config
    run.history["iteration"].append(run.iteration)
    run.history["train_loss"].append(float(losses.mean()))
    val = validate(run, val_tasks) if run.iteration % cfg.val_every == 0 or done else float("nan")
    run.history["val_loss"].append(val)  # the validation metric: MSE, or accuracy for omniglot
    last_val = next((v for v in reversed(run.history["val_loss"]) if v == v), val)  # the latest measured
    bar.set_postfix(loss=f"{run.history['train_loss'][-1]:.3f}", val=f"{last_val:.3f}")


def evaluate_checkpoint(path, n_tasks: int = 600, device="auto", data_dir=None, transductive: bool = True,
                        report=None, **protocol) -> dict:
    """The test protocol on a saved model: fixed test tasks, fine-tune, mean ± 95% CI per step.

    ``protocol`` overrides ``shots``, ``inner_lr``, ``inner_steps`` or ``inner_optimizer``. A Reptile
    run that kept its inner Adam state fine-tunes every test task from that state. ``transductive=False``
    scores each query on its own with the support set (``evaluation.predict``). ``report``: the steps to
    score (default all); ``mean``, ``ci95``, ``median`` and ``diverged`` follow ``scored``.
    """
    device = resolve_device(device)
    run = load_run(path, device)
    model, config = run.model, run.config
    if data_dir is not None:
        config = Config.from_dict({**config.to_dict(), "data_dir": str(data_dir)})
    chosen = {k: v for k, v in protocol.items() if v is not None}
    protocol = {**eval_protocol(config.task, config.algo, config.ways), **chosen}
    tasks = fixed_tasks(config, "test", n_tasks, protocol["shots"], device)
    result = evaluate(model, P.get_params(model), tasks, loss_function(config.task), protocol["inner_lr"],
                      protocol["inner_steps"], metric_name(config.task), inner_optimizer=protocol["inner_optimizer"],
                      inner_state=_test_state(run, protocol), transductive=transductive, report=report)
    return {"checkpoint": str(path), "algo": config.algo, "task": config.task, "metric": result.metric,
            "ways": config.ways if config.task == "omniglot" else None,
            "protocol": {**protocol, "transductive": transductive}, "scored": result.steps,
            "mean": [float(v) for v in result.mean], "ci95": [float(v) for v in result.ci95],
            "median": [float(v) for v in result.per_task.nanmedian(0).values],
            "diverged": [int(v) for v in (~torch.isfinite(result.per_task)).sum(0)], "tasks": n_tasks}
