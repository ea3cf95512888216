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
from .adam import AdamState
from .evaluation import trajectory
from .maml import LossFn, check_hyper
from .params import Params, forward
from .tasks import Task

INNER_OPTIMIZERS = ("sgd", "adam")


def adapt_task(model: nn.Module, params: Params, task: Task, loss_fn: LossFn, inner_lr: float,
               inner_steps: int, inner_optimizer: str = "sgd", inner_batch: int | None = None,
               inner_state: AdamState | None = None) -> Params:
    """φ_i: the parameters after k inner steps (SGD, or Adam with β1 = 0 as the Reptile paper) on the
    task's support set, no graph kept; with ``inner_batch``, on consecutive blocks of it
    (order them with ``minibatch_order`` first). With ``inner_state``, Adam continues from it and
    leaves it at the state after these steps (the Reptile code: only the weights are reset per task)."""
    if inner_optimizer not in INNER_OPTIMIZERS:
        raise ValueError(f"unknown inner optimizer {inner_optimizer!r}; choose one of {INNER_OPTIMIZERS}")
    *_, phi = trajectory(model, params, task.x_support, task.y_support, loss_fn, inner_lr, inner_steps,
                         inner_optimizer, inner_batch, inner_state)
    return phi


def mean_adapted(model: nn.Module, params: Params, tasks: Task, loss_fn: LossFn, inner_lr: float,
                 inner_steps: int, inner_optimizer: str = "sgd", batched: bool = False,
                 inner_batch: int | None = None, inner_state: AdamState | None = None) -> Params:
    """mean_i φ_i over the tasks of a batch (no graph kept).

    ``inner_state`` (Adam): the per-task loop runs the tasks one after another, each continuing from the
    state the previous one left (exactly the Reptile code); ``batched=True`` starts every task from it and
    leaves the tasks' mean state (see ``batched.adapt_batched``)."""
    check_hyper(inner_lr, inner_steps)
    if inner_optimizer not in INNER_OPTIMIZERS:
        raise ValueError(f"unknown inner optimizer {inner_optimizer!r}; choose one of {INNER_OPTIMIZERS}")
    if batched and isinstance(tasks, Task):
        from .batched import adapt_batched

        phis = adapt_batched(model, P.detach(params), tasks.x_support, tasks.y_support, loss_fn, inner_lr,
                             inner_steps, first_order=True, inner_optimizer=inner_optimizer, inner_batch=inner_batch,
                             inner_state=inner_state)
        return {k: v.detach().mean(0) for k, v in phis.items()}
    return P.mean([adapt_task(model, params, t, loss_fn, inner_lr, inner_steps, inner_optimizer, inner_batch,
                              inner_state) for t in tasks])


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


def reptile_step(model: nn.Module, params: Params, tasks: Task, loss_fn: LossFn, inner_lr: float,
                 inner_steps: int, outer_lr: float, inner_optimizer: str = "sgd",
                 batched: bool = False, inner_batch: int | None = None,
                 inner_state: AdamState | None = None) -> Params:
    """One Reptile outer step; returns the new meta-parameters ``θ + ε (mean_i φ_i − θ)``.

    ``outer_lr`` is ε (anneal it linearly to 0 by passing a smaller value each step); ``inner_state``
    as in ``mean_adapted``.
    """
    if not 0 <= outer_lr:
        raise ValueError(f"outer_lr (epsilon) must be >= 0, got {outer_lr}")
    mean_phi = mean_adapted(model, params, tasks, loss_fn, inner_lr, inner_steps, inner_optimizer, batched,
                            inner_batch, inner_state)
    with torch.no_grad():
        return P.lerp(P.detach(params), mean_phi, outer_lr)


def joint_step(model: nn.Module, params: Params, tasks: Task, lr: float, steps: int = 1,
               loss_fn: LossFn = F.mse_loss) -> Params:
    """``steps`` gradient steps of ``lr`` on the mean support loss of all tasks pooled (joint training),
    what Reptile with one inner step equals (notebook 06)."""
    for _ in range(steps):
        params = P.detach(params, requires_grad=True)
        loss = torch.stack([loss_fn(forward(model, params, t.x_support), t.y_support) for t in tasks]).mean()
        grads = torch.autograd.grad(loss, list(params.values()))
        params = {k: (v - lr * g).detach() for (k, v), g in zip(params.items(), grads)}
    return params


def apply_params(params: Params, new: Params) -> None:
    """Copy ``new`` into the tensors of ``params`` in place (the model's own parameters)."""
    with torch.no_grad():
        for k, v in params.items():
            v.copy_(new[k])
