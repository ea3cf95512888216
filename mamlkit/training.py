"""Meta-training for MAML, First-Order MAML, Reptile, the pretrained baseline and the algorithms of
``algorithms.py`` (Meta-SGD, ANIL, MAML++, iMAML, prototypical networks) on any task family (one loop, the
algorithm chosen by name), with checkpoints that resume exactly.

Introduced in notebook 04_maml.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import algorithms, distributed, families, maml, reptile
from . import params as P
from .batched import check_batchable, prefer_batched
from .checkpoint import save_checkpoint
from .config import Config, eval_protocol
from .divergence import DivergenceGuard
from .evaluation import EvalResult, Protocol, evaluate
from .inner import InnerLoop, by_name
from .interrupt import Stop
from .resume import continue_with
from .runs import Run, load_run, new_run, resolve_device
from .tasks import Task

LOG_EVERY = 100  # iterations per line of history (the mean training loss over them)


def joint_loss(model: nn.Module, params: P.Params, tasks: Task, loss_fn) -> Tensor:
    """The pretrained baseline's loss: all points of all tasks, no inner loop."""
    x = torch.cat([tasks.x_support, tasks.x_query], 1).flatten(0, 1)
    y = torch.cat([tasks.y_support, tasks.y_query], 1).flatten(0, 1)
    return loss_fn(P.forward(model, params, x), y)


DERIVED = ("msl_iterations", "first_order_iterations")  # defaults that follow --iterations at the start of a run


def use_batched(config: Config, model: nn.Module) -> bool:
    """``batched=None``: batched where it is faster (``prefer_batched``); ``True`` insists (clear error
    if the model cannot be batched)."""
    if config.batched is False or config.algo == "pretrain" or config.workers > 1:  # workers: the loop
        return False
    if config.batched or config.compiled:
        check_batchable(model)
        return True
    return prefer_batched(model)


def warn_compile_on_cpu_conv(config: Config, model: nn.Module) -> None:
    """``--compile`` pays on the sine MLP; on a convolutional model on the CPU it was measured slower than the loop."""
    if config.compiled and not any(p.is_cuda for p in model.parameters()) and any(
            isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
        warnings.warn("--compile on a convolutional model on the CPU: measured slower than the default per-task "
                      "loop (Conv4: 1.29 vs 1.65 it/s, and 2 minutes to compile; benchmarks/README.md)", stacklevel=3)


def outer_step(run: Run, tasks: Task, batched: bool) -> Tensor:
    """One outer update of the configured algorithm; returns the loss it optimised (Reptile: |Δθ|).

    Under ``torchrun`` each process takes its share of ``tasks`` and the results are summed.
    """
    cfg, model = run.config, run.model
    params, loss_fn = P.get_params(model), run.family.loss
    if cfg.inner_batch is not None:  # Reptile's mini-batches: drawn for all tasks, before sharding
        tasks = reptile.minibatch_order(tasks, cfg.inner_batch, cfg.inner_steps, run.generator)
    mine, weight = distributed.shard(tasks)
    if cfg.algo == "reptile":
        eps = cfg.outer_lr * (1 - run.iteration / cfg.iterations) if cfg.anneal else cfg.outer_lr
        loop = InnerLoop(by_name(cfg.inner_optimizer, cfg.inner_lr), cfg.inner_steps, True, cfg.inner_batch)
        step0 = 0 if run.inner_state is None else run.inner_state.step
        step = step0 + cfg.inner_steps * (1 if batched else len(tasks))  # the kept state's count after this step
        mean_phi, state = reptile.mean_adapted(model, params, mine, loss_fn, loop, run.inner_state, batched)
        mean_phi, state = distributed.combine_reptile(mean_phi, state, weight, step)
        run.inner_state = state if cfg.keep_inner_state else None
        new = P.lerp(P.detach(params), mean_phi, eps)  # θ + ε (mean_i φ_i − θ)
        move = P.norm(P.sub(new, params)).detach()  # NaN if the step diverged
        reptile.apply_params(params, new)
        return move
    run.optimizer.zero_grad(set_to_none=True)
    algorithm = algorithms.get(cfg.algo)
    if algorithm is not None:  # Meta-SGD, ANIL, MAML++, …: see algorithms.py
        loss = algorithm.meta_backward(run, mine, batched, weight)
    elif cfg.algo == "pretrain":
        loss = joint_loss(model, params, mine, loss_fn)
        (loss * weight).backward()
    else:
        inner = InnerLoop.sgd(cfg.inner_lr, cfg.inner_steps, cfg.first_order_at(run.iteration))
        how = maml.Execution(batched, cfg.max_memory, cfg.workers, cfg.compiled)
        loss = maml.meta_backward(model, params, mine, loss_fn, inner, how, weight)
    distributed.all_reduce_([p.grad for p in [*params.values(), *run.inner_params.values()] if p.grad is not None])
    for group in run.optimizer.param_groups:
        group["lr"] = outer_lr(cfg, run.iteration)
    run.optimizer.step()
    return distributed.reduce_mean(loss.detach(), weight)


def outer_lr(config: Config, iteration: int) -> float:
    """The outer step size β for the update that follows ``iteration`` updates: constant, or annealed
    from β to 0 over the run on a half cosine (``outer_schedule="cosine"``, MAML++'s remedy)."""
    if config.outer_schedule == "cosine":
        return config.outer_lr * 0.5 * (1 + math.cos(math.pi * iteration / config.iterations))
    return config.outer_lr


def evaluate_run(run: Run, tasks: Task, transductive: bool = True, report=None, **overrides) -> EvalResult:
    """The test protocol of ``run`` on ``tasks``: fine-tune as the paper does at meta-test (``overrides``:
    ``inner_lr``, ``inner_steps``, ``inner_optimizer``) and score. A Reptile run that kept its inner Adam
    state fine-tunes every task from that state."""
    cfg = run.config
    protocol = {**eval_protocol(cfg.task, cfg.algo, cfg.ways), **{k: v for k, v in overrides.items() if v is not None}}
    algorithm = algorithms.get(cfg.algo)
    if algorithm is not None:
        if protocol["inner_optimizer"] != "sgd":
            raise ValueError(f"{cfg.algo} fine-tunes with SGD: drop --inner-optimizer {protocol['inner_optimizer']}")
        return algorithm.evaluate(run, tasks, protocol, transductive, report)
    loop = InnerLoop(by_name(protocol["inner_optimizer"], protocol["inner_lr"]), protocol["inner_steps"])
    state = run.inner_state if protocol["inner_optimizer"] == "adam" else None
    return evaluate(run.model, P.get_params(run.model), tasks, run.family.loss,
                    Protocol(loop, report=report, transductive=transductive), run.family.metric, state)


def meta_train(config: Config, out=None, device="cpu", resume: bool = False, model: nn.Module | None = None,
               progress: bool = True, max_minutes: float | None = None) -> Run:
    """Train with ``config`` (its ``task``: a registered family's name, or a ``Family``) and checkpoint to
    ``out`` every ``checkpoint_every`` iterations; ``model`` replaces the family's default model.

    With ``resume=True`` and an existing ``out``, continue from it: the result equals an
    uninterrupted run; the settings ``resume.continue_with`` allows may differ from the checkpoint's. A non-finite
    or exploding loss or state raises ``TrainingDiverged`` (``divergence``) before it is saved.
    ``max_minutes`` stops early (checkpointed, resumable) once that much wall time has passed; so does
    a SIGINT or SIGTERM under ``interrupt.stop_on_signals``.
    """
    if isinstance(config.task, families.Family):
        config = replace(config, task=families.register(config.task).name)
    stop = Stop(max_minutes)
    device = resolve_device(device)
    asked, config = config, config.resolved()
    resuming = resume and out is not None and Path(out).exists()
    run = load_run(out, device, config.iterations, model) if resuming else new_run(config, device, model)
    if resuming:  # defaults derived from the iterations (a third, a tenth) stay the checkpoint's when not asked
        derived = {name: getattr(run.config, name) for name in DERIVED if getattr(asked, name) is None}
        continue_with(run, replace(config, **derived))  # refuses settings that may not change on resume
    cfg, family = run.config, run.family
    batched = use_batched(cfg, run.model)
    warn_compile_on_cpu_conv(cfg, run.model)
    val_tasks = family.fixed_tasks("val", cfg.val_tasks, eval_protocol(cfg.task, cfg.algo, cfg.ways)["shots"],
                                   device=device)
    guard = DivergenceGuard(run, val_tasks, family.loss)
    losses: list[Tensor] = []
    clock = _wall_clock(run)
    bar = tqdm(total=cfg.iterations, initial=run.iteration, disable=not (progress and distributed.is_main()),
               desc=cfg.algo)
    while run.iteration < cfg.iterations:
        tasks = family.sample(cfg.meta_batch_size, "train", cfg.shots, cfg.queries, run.generator, device)
        losses.append(outer_step(run, tasks, batched))
        run.iteration += 1
        bar.update(1)
        done = run.iteration == cfg.iterations or stop.due()
        if len(losses) == LOG_EVERY or done or run.iteration % cfg.checkpoint_every == 0:
            guard.check(run, torch.stack(losses))  # before any save: never a diverged checkpoint
            _log(run, torch.stack(losses), val_tasks, done, bar)
            run.wall_seconds += [float("nan")] * (len(run.history["iteration"]) - 1 - len(run.wall_seconds))
            run.wall_seconds.append(clock())
            losses = []
        if out is not None and distributed.is_main() and (done or run.iteration % cfg.checkpoint_every == 0):
            save_checkpoint(run.state(), out)
        if done:
            break
    bar.close()
    return run


def _wall_clock(run: Run):
    """Seconds of training so far: this session's wall time after the checkpoint's last recorded total."""
    before = next((v for v in reversed(run.wall_seconds) if v == v), 0.0)
    start = time.perf_counter()
    return lambda: before + time.perf_counter() - start


def _log(run: Run, losses: Tensor, val_tasks: Task, done: bool, bar) -> None:
    cfg = run.config
    history = run.history
    history["iteration"].append(run.iteration)
    history["train_loss"].append(float(losses.mean()))
    validated = run.iteration % cfg.val_every == 0 or done
    algorithm = algorithms.get(cfg.algo)
    # learned step sizes were learned for the trained number of steps; more steps extrapolate them (and can diverge)
    steps = {"inner_steps": cfg.inner_steps} if algorithm is not None and algorithm.learned_lr else {}
    history["val_metric"].append(float(evaluate_run(run, val_tasks, **steps).mean[-1]) if validated else float("nan"))
    for key, values in run.pending.items():  # e.g. iMAML's CG residual: the largest since the last line
        column = history.setdefault(key, [])
        column += [float("nan")] * (len(history["iteration"]) - 1 - len(column)) + [max(values)]
    run.pending.clear()
    last = next((v for v in reversed(history["val_metric"]) if v == v), float("nan"))  # the latest measured
    extra = {"cg_res": f"{history['cg_residual'][-1]:.2g}"} if "cg_residual" in history else {}
    bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", val=f"{last:.3f}", **extra)


def evaluate_checkpoint(path, n_tasks: int = 600, device="auto", data_dir=None, **options) -> dict:
    """The test protocol on a saved model: fixed test tasks, fine-tune, mean ± 95% CI per scored step.

    ``options``: ``shots``, ``inner_lr``, ``inner_steps``, ``inner_optimizer`` override the protocol;
    ``transductive`` and ``report`` as in ``evaluate_run``. ``mean``, ``ci95``, ``median`` and
    ``diverged`` follow ``scored``.
    """
    device = resolve_device(device)
    run = load_run(path, device)
    if data_dir is not None:
        run.config = replace(run.config, data_dir=str(data_dir))
    cfg, transductive, report = run.config, options.pop("transductive", True), options.pop("report", None)
    algorithm = algorithms.get(cfg.algo)
    if options.get("inner_lr") is not None and algorithm is not None and algorithm.learned_lr and run.inner_params:
        raise ValueError(f"{path} ({cfg.algo}) fine-tunes with its learned step sizes: drop --inner-lr")
    protocol = {**eval_protocol(cfg.task, cfg.algo, cfg.ways), **{k: v for k, v in options.items() if v is not None}}
    tasks = run.family.fixed_tasks("test", n_tasks, protocol["shots"], device=device)
    result = evaluate_run(run, tasks, transductive, report, **{k: v for k, v in protocol.items() if k != "shots"})
    if algorithm is not None and algorithm.learned_lr and run.inner_params:
        protocol["inner_lr"] = "learned"  # what the table and the JSON say: not the family's number
    return {"checkpoint": str(path), "algo": cfg.algo, "task": cfg.task, "metric": result.metric,
            "ways": cfg.ways if cfg.task == "omniglot" else None,
            "protocol": {**protocol, "transductive": transductive},
            "scored": result.steps, "mean": [float(v) for v in result.mean], "ci95": [float(v) for v in result.ci95],
            "median": [float(v) for v in result.per_task.nanmedian(0).values],
            "diverged": [int(v) for v in (~torch.isfinite(result.per_task)).sum(0)], "tasks": n_tasks,
            "result": result}  # per task, for paired differences (not in the JSON)
