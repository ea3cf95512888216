"""MAML: the inner update (task-specific), adaptation, and the outer loss whose gradient is the
meta-gradient (general performance). First-Order MAML is ``first_order=True``.

Introduced in notebooks 02_inner_update (inner update), 03_outer_update and 04_maml.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batched import check_max_memory
from .inner import InnerLoop
from .params import Params, forward
from .taskpool import check_workers, map_tasks, replicas
from .tasks import Task, as_batch

LossFn = Callable[[Tensor, Tensor], Tensor]


def check_hyper(inner_lr: float, inner_steps: int = 1) -> None:
    """Reject step sizes and step counts that cannot adapt anything, saying what to change."""
    if not isinstance(inner_lr, (int, float)) or not inner_lr > 0:
        raise ValueError(f"inner_lr (alpha) must be a number > 0, got {inner_lr!r}; the paper uses 0.01 for sine waves")
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
        raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps!r}")


def inner_update(model: nn.Module, params: Params, x: Tensor, y: Tensor, loss_fn: LossFn,
                 inner_lr: float, first_order: bool = False) -> Params:
    """One SGD step on the support set: ``θ' = θ - α ∇_θ L(θ)``.

    Second order (``first_order=False``) keeps the graph of the gradient so the outer update can
    differentiate through this step; first order treats the gradient as a constant.
    """
    check_hyper(inner_lr)
    params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    loss = loss_fn(forward(model, params, x), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
    return {k: v - inner_lr * g for (k, v), g in zip(params.items(), grads)}


def adapt(model: nn.Module, params: Params, x: Tensor, y: Tensor, loss_fn: LossFn,
          inner_lr: float, inner_steps: int = 1, first_order: bool = False) -> Params:
    """``inner_steps`` inner updates on the same support set (meta-train and meta-test alike)."""
    check_hyper(inner_lr, inner_steps)
    return InnerLoop.sgd(inner_lr, inner_steps, first_order).adapt(model, loss_fn, params, x, y)[0]


def task_loss(model: nn.Module, params: Params, task: Task, loss_fn: LossFn, inner_lr: float,
              inner_steps: int, first_order: bool = False) -> Tensor:
    """Query loss of one task after adapting on its support set: ``L(θ'_i, T_i)``."""
    adapted = adapt(model, params, task.x_support, task.y_support, loss_fn, inner_lr, inner_steps, first_order)
    return loss_fn(forward(model, adapted, task.x_query), task.y_query)


def maml_loss(model: nn.Module, params: Params, tasks: Task | Iterable[Task], loss_fn: LossFn,
              inner_lr: float, inner_steps: int = 1, first_order: bool = False,
              batched: bool = False) -> Tensor:
    """Mean query loss over tasks after adaptation; its gradient w.r.t. ``params`` is the
    meta-gradient (second order), or the First-Order MAML one with ``first_order=True``.

    ``batched=True`` adapts all tasks of a batch at once with ``torch.func.vmap`` (same result,
    faster); the default per-task loop is the reference the notebooks teach.
    """
    check_hyper(inner_lr, inner_steps)
    tasks = as_batch(tasks, "maml_loss")
    if batched:
        from .batched import batched_task_losses

        loop = InnerLoop.sgd(inner_lr, inner_steps, first_order)
        return batched_task_losses(model, params, tasks, loss_fn, loop).mean()
    losses = [task_loss(model, params, t, loss_fn, inner_lr, inner_steps, first_order) for t in tasks]
    if not losses:
        raise ValueError("maml_loss needs at least one task")
    return torch.stack(losses).mean()


@dataclass(frozen=True)
class Execution:
    """How ``meta_backward`` runs the tasks of a meta-batch; every way gives the same gradient (tested).

    - the per-task loop (default): task by task, one task's inner graph alive at a time;
    - ``workers > 1``: the loop with that many tasks at once on as many CPU cores (``taskpool``);
    - ``batched``: all tasks at once with ``torch.func.vmap``, in chunks whose graph fits ``max_memory`` MB
      (``None``: one chunk). The loop needs no budget: it holds one task's graph;
    - ``compiled`` (with ``batched``): the meta-gradient as one ``torch.compile``'d function (``compiled.py``;
      SGD inner steps, equal to rounding).
    """

    batched: bool = False
    max_memory: float | None = None
    workers: int = 1
    compiled: bool = False

    def __post_init__(self):
        check_workers(self.workers)
        check_max_memory(self.max_memory)
        if self.batched and self.workers > 1:
            raise ValueError("workers runs the per-task loop on several cores; the batched path runs all tasks "
                             "at once: choose one (batched=False, or workers=1)")
        if self.compiled and (not self.batched or self.max_memory is not None):
            raise ValueError("compiled is the batched path as one compiled function: it needs batched=True and no "
                             "max_memory")


def meta_backward(model: nn.Module, params: Params, tasks: Task, loss_fn: LossFn, inner: InnerLoop,
                  execution: Execution = Execution(), scale: float = 1.0) -> Tensor:
    """Add ``scale`` × the meta-gradient of the mean query loss after ``inner`` to ``params``' ``.grad``;
    return the loss. ``execution`` says how the tasks run (loop, workers, batched in chunks): the same
    gradient as ``maml_loss(...).backward()`` every way.
    """
    if not isinstance(execution, Execution):
        raise TypeError(f"execution must be a maml.Execution (e.g. Execution(batched=True)), got {execution!r}")
    tasks = as_batch(tasks, "meta_backward")
    if execution.compiled:
        from .compiled import meta_backward_compiled

        return meta_backward_compiled(model, params, tasks, loss_fn, inner, scale)
    if execution.batched:
        from .batched import meta_backward_batched

        return meta_backward_batched(model, params, tasks, loss_fn, inner, scale, execution.max_memory)
    if execution.workers > 1:
        return _meta_backward_parallel(model, params, tasks, loss_fn, inner, scale, execution.workers)
    total = torch.zeros(())
    for task in tasks:
        adapted, _ = inner.adapt(model, loss_fn, params, task.x_support, task.y_support)
        loss = loss_fn(forward(model, adapted, task.x_query), task.y_query) / len(tasks)
        (scale * loss).backward()
        total = total.to(loss.device) + loss.detach()
    return total


def _meta_backward_parallel(model, params: Params, tasks: Task, loss_fn: LossFn, inner: InnerLoop, scale: float,
                            workers: int) -> Tensor:
    """``meta_backward``'s loop with ``workers`` tasks at a time; each returns its gradient, added in task order."""
    candidates = {id(p): p for p in [*params.values(), *model.parameters()]}.values()
    leaves = [p for p in candidates if p.requires_grad and p.is_leaf]  # where .backward() would accumulate
    models = replicas(model, min(workers, len(tasks)))

    def one(task: Task, worker: int):
        adapted, _ = inner.adapt(models[worker], loss_fn, params, task.x_support, task.y_support)
        loss = loss_fn(forward(models[worker], adapted, task.x_query), task.y_query) / len(tasks)
        return loss.detach(), torch.autograd.grad(scale * loss, leaves, allow_unused=True)

    results = map_tasks(one, list(tasks), workers)
    for _, grads in results:
        for p, g in zip(leaves, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
    return sum((loss for loss, _ in results[1:]), results[0][0])


def maml_step(model: nn.Module, params: Params, optimizer: torch.optim.Optimizer, tasks: Task,
              loss_fn: LossFn, inner: InnerLoop | float, batched: bool = False) -> Tensor:
    """One outer update ``θ ← θ - β ∇_θ mean_i L(θ'_i, T_i)`` with ``optimizer``; returns the loss.
    ``inner``: the inner loop (``InnerLoop.sgd(α, steps, first_order)``), or α for one SGD step."""
    inner = inner if isinstance(inner, InnerLoop) else InnerLoop.sgd(inner)
    optimizer.zero_grad(set_to_none=True)
    loss = meta_backward(model, params, tasks, loss_fn, inner, Execution(batched))
    optimizer.step()
    return loss


def gradient_agreement(model: nn.Module, params: Params, tasks: Task, inner_lr: float, inner_steps: int,
                       loss_fn: LossFn = F.mse_loss) -> tuple[Tensor, Tensor, float]:
    """MAML and FOMAML meta-gradients (flat vectors) and their cosine similarity (notebook 05)."""
    grads = []
    for first_order in (False, True):
        loss = maml_loss(model, params, tasks, loss_fn, inner_lr, inner_steps, first_order)
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))]))
    return grads[0], grads[1], float(F.cosine_similarity(grads[0], grads[1], dim=0))
