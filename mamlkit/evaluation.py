"""Honest evaluation: fine-tune on each fixed test task's support set for 1..k steps and report the
query MSE (or accuracy) after each, as mean ± 95% CI over the tasks.

Introduced in notebook 04_maml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from . import maml
from . import params as P
from .adam import BETAS, AdamState, adam_update
from .batched import inner_grads, prefer_batched
from .params import forward
from .tasks import Task, step_batch


@dataclass
class EvalResult:
    """Query metric after 0..k inner steps: per task, mean and 95% CI half-width (1.96 σ / √n)."""

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


def score(pred: Tensor, y: Tensor, metric: str) -> Tensor:
    """Per-task metric over the last dims: MSE, or accuracy of the arg-max class."""
    if metric == "accuracy":
        return (pred.argmax(-1) == y).float().flatten(1).mean(-1)
    return ((pred - y) ** 2).flatten(1).mean(-1)


def trajectory(model: nn.Module, params: P.Params, x: Tensor, y: Tensor, loss_fn, inner_lr: float,
               inner_steps: int, inner_optimizer: str = "sgd", inner_batch: int | None = None,
               inner_state: AdamState | None = None):
    """Yield the parameters before and after each of ``inner_steps`` fine-tuning steps (no graph):
    SGD, or Adam with β1 = 0 (the Reptile paper's inner loop and its Omniglot evaluation).
    With ``inner_batch = b``, step ``s`` uses examples ``s·b … s·b + b − 1`` (see ``reptile.minibatch_order``).
    With ``inner_state``, Adam continues from that state and leaves it, in place, at the state after
    the last step (pass ``inner_state.clone()`` to keep the original)."""
    if inner_state is not None and inner_optimizer != "adam":
        raise ValueError("inner_state is the inner Adam's state: use it with inner_optimizer='adam'")
    phi = P.detach(params, requires_grad=True)
    yield P.detach(phi)
    optimizer = torch.optim.Adam(phi.values(), lr=inner_lr, betas=BETAS) if inner_optimizer == "adam" else None
    if inner_state is not None:
        inner_state.load_into(optimizer, phi)
    for step in range(inner_steps):
        xs, ys = step_batch(x, y, step, inner_batch)
        if optimizer is None:
            phi = maml.inner_update(model, phi, xs, ys, loss_fn, inner_lr, first_order=True)
            phi = P.detach(phi, requires_grad=True)
        else:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(forward(model, phi, xs), ys).backward()
            optimizer.step()
            if inner_state is not None and step == inner_steps - 1:
                inner_state.read_from(optimizer, phi)
        yield P.detach(phi)



def evaluate(model: nn.Module, params: P.Params, tasks: Task, loss_fn, inner_lr: float, inner_steps: int = 10,
             metric: str = "mse", batched: bool | None = None, inner_optimizer: str = "sgd",
             chunk: int = 100, inner_state: AdamState | None = None) -> EvalResult:
    """Adapt on each task's support set for 1..``inner_steps`` steps (SGD with the same step size,
    reusing the support set every step, as the MAML paper; or Adam for Reptile's Omniglot protocol)
    and score the query set after each step. The batched path runs ``chunk`` tasks at a time.
    With ``inner_state`` (Adam), every task's fine-tuning starts from that state (the Reptile code's
    evaluation); it is not changed.
    """
    maml.check_hyper(inner_lr, inner_steps)
    if batched is None:
        batched = prefer_batched(model)
    if batched:
        # ``chunk`` tasks at a time: bounded memory for large test sets
        chunks = [_evaluate_batched(model, params, tasks[i: i + chunk], loss_fn, inner_lr, inner_steps, metric,
                                    inner_optimizer, inner_state) for i in range(0, len(tasks), chunk)]
        return EvalResult(chunks[0].steps, torch.cat([c.per_task for c in chunks]), metric)
    rows = []
    for task in tasks:
        row = []
        for phi in trajectory(model, params, task.x_support, task.y_support, loss_fn, inner_lr, inner_steps,
                              inner_optimizer, inner_state=None if inner_state is None else inner_state.clone()):
            with torch.no_grad():
                row.append(score(forward(model, phi, task.x_query)[None], task.y_query[None], metric)[0])
        rows.append(torch.stack(row))
    return EvalResult(list(range(inner_steps + 1)), torch.stack(rows).cpu(), metric)


def _evaluate_batched(model, params, tasks: Task, loss_fn, inner_lr, inner_steps, metric,
                      inner_optimizer="sgd", inner_state: AdamState | None = None) -> EvalResult:
    state = inner_state if inner_state is not None else AdamState.zeros(params)

    def per_task(d):
        return {k: v.detach().unsqueeze(0).expand(len(tasks), *v.shape) for k, v in d.items()}

    params, moments = per_task(params), (per_task(state.exp_avg), per_task(state.exp_avg_sq))
    batch_forward = torch.func.vmap(lambda p, x: forward(model, p, x))

    def step(p, m, s, x, y, t: int):
        g = inner_grads(model, loss_fn, p, x, y)
        if inner_optimizer == "adam":
            return adam_update(p, g, m, s, t, inner_lr)
        return {k: p[k] - inner_lr * g[k] for k in p}, m, s

    rows = []
    for i in range(inner_steps + 1):
        with torch.no_grad():
            rows.append(score(batch_forward(params, tasks.x_query), tasks.y_query, metric))
        if i < inner_steps:
            params, *moments = torch.func.vmap(partial(step, t=state.step + i + 1))(
                params, *moments, tasks.x_support, tasks.y_support)
    return EvalResult(list(range(inner_steps + 1)), torch.stack(rows, 1).cpu(), metric)
