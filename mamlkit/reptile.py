"""Reptile (Nichol, Achiam & Schulman 2018): adapt with k inner steps to φ_i, then move the
initialisation toward them, ``θ ← θ + ε (mean_i φ_i − θ)``.

Introduced in notebook 06_reptile.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from . import params as P
from .inner import SGD, InnerLoop
from .maml import LossFn, check_hyper
from .params import Params, forward
from .tasks import Task, as_batch


def adapt_task(model: nn.Module, params: Params, task: Task, loss_fn: LossFn, loop: InnerLoop, state=None):
    """φ_i and the inner optimizer's state after ``loop`` on the task's support set, no graph kept
    (with ``loop.batch``, on consecutive blocks of it: order them with ``minibatch_order`` first).
    ``state`` continues a kept inner state (the Reptile code resets only the weights per task)."""
    return loop.adapt(model, loss_fn, params, task.x_support, task.y_support, state, graph=False)


def mean_adapted(model: nn.Module, params: Params, tasks: Task, loss_fn: LossFn, loop: InnerLoop, state=None,
                 batched: bool = False):
    """mean_i φ_i over a batch of tasks (no graph kept) and the inner optimizer's state after them.

    With ``state`` (Adam) the per-task loop runs the tasks one after another, each continuing from the
    state the previous one left (exactly the Reptile code); ``batched=True`` starts every task from it
    and returns the tasks' mean state (see ``batched.adapt_batched``)."""
    tasks = as_batch(tasks, "mean_adapted")
    if batched and isinstance(tasks, Task):
        from .batched import adapt_batched

        phis, end = adapt_batched(model, loss_fn, P.detach(params), tasks.x_support, tasks.y_support,
                                  replace(loop, first_order=True), state)
        return {k: v.detach().mean(0) for k, v in phis.items()}, end if state is not None else None
    phis, kept = [], state
    for task in tasks:
        phi, end = adapt_task(model, params, task, loss_fn, loop, kept)
        kept = end if state is not None else None  # without a kept state every task starts afresh
        phis.append(phi)
    return P.mean(phis), kept


def minibatch_order(tasks: Task, inner_batch: int, inner_steps: int, generator: torch.Generator) -> Task:
    """Reorder each task's support set so that inner step ``s`` trains on the ``s``-th block of
    ``inner_batch`` examples: the examples shuffled, used up, reshuffled (the Reptile code's
    mini-batches without replacement, e.g. 5 steps of 10 of the 50 support images).

    ``tasks`` has a leading task dimension; the result holds ``inner_batch · inner_steps`` support
    examples per task. The shuffling draws from ``generator`` (on the CPU, as task sampling)."""
    n_tasks, n = tasks.x_support.shape[:2]
    if not 1 <= inner_batch <= n:
        raise ValueError(f"inner_batch must be between 1 and the {n} support examples per task, got {inner_batch}")
    rounds = -(-inner_batch * inner_steps // n)  # ceil
    order = torch.stack([torch.cat([torch.randperm(n, generator=generator) for _ in range(rounds)])
                         for _ in range(n_tasks)])[:, : inner_batch * inner_steps].to(tasks.x_support.device)
    rows = torch.arange(n_tasks, device=order.device)[:, None]
    return replace(tasks, x_support=tasks.x_support[rows, order], y_support=tasks.y_support[rows, order])


def reptile_step(model: nn.Module, params: Params, tasks: Task, loss_fn: LossFn, inner: InnerLoop | float,
                 inner_steps: int | None = None, outer_lr: float = 1.0, batched: bool = False) -> Params:
    """One Reptile outer step; returns the new meta-parameters ``θ + ε (mean_i φ_i − θ)``.

    ``inner`` is the inner loop, or α for ``inner_steps`` SGD steps; ``outer_lr`` is ε (anneal it
    linearly to 0 by passing a smaller value each step).
    """
    if not 0 <= outer_lr:
        raise ValueError(f"outer_lr (epsilon) must be >= 0, got {outer_lr}")
    if not isinstance(inner, InnerLoop):
        check_hyper(inner, inner_steps)
        inner = InnerLoop.sgd(inner, inner_steps)
    mean_phi, _ = mean_adapted(model, params, tasks, loss_fn, inner, batched=batched)
    with torch.no_grad():
        return P.lerp(P.detach(params), mean_phi, outer_lr)


def joint_step(model: nn.Module, params: Params, tasks: Task, lr: float, steps: int = 1,
               loss_fn: LossFn = F.mse_loss) -> Params:
    """``steps`` gradient steps of ``lr`` on the mean support loss of all tasks pooled (joint training),
    what Reptile with one inner step equals (notebook 06)."""
    for _ in range(steps):
        params = P.detach(params, requires_grad=True)
        loss = torch.stack([loss_fn(forward(model, params, t.x_support), t.y_support) for t in tasks]).mean()
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        params = P.detach(SGD(lr).update(params, grads)[0])
    return params


def apply_params(params: Params, new: Params) -> None:
    """Copy ``new`` into the tensors of ``params`` in place (the model's own parameters)."""
    with torch.no_grad():
        for k, v in params.items():
            v.copy_(new[k])
