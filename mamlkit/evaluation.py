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
    """Query metric after the scored inner steps (``steps``, by default 0..k): per task, mean and 95% CI
    half-width (1.96 σ / √n); column ``j`` of ``per_task``, ``mean`` and ``ci95`` is step ``steps[j]``."""

    steps: list
    per_task: Tensor  # (tasks, len(steps))
    metric: str

    @property
    def mean(self) -> Tensor:
        return self.per_task.mean(0)

    @property
    def ci95(self) -> Tensor:
        """NaN for a single task: no spread, so no interval (and no ``torch.std`` warning)."""
        n = self.per_task.shape[0]
        if n < 2:
            return torch.full(self.per_task.shape[1:], float("nan"))
        return 1.96 * self.per_task.std(0, unbiased=True) / math.sqrt(n)

    def at(self, step: int) -> tuple[float, float]:
        """(mean, 95% CI) after ``step`` inner steps."""
        if step not in self.steps:
            raise ValueError(f"step {step} was not scored; scored steps: {self.steps}")
        i = self.steps.index(step)
        return float(self.mean[i]), float(self.ci95[i])


def score(pred: Tensor, y: Tensor, metric: str) -> Tensor:
    """Per-task metric over the last dims: MSE, or accuracy of the arg-max class."""
    if metric == "accuracy":
        return (pred.argmax(-1) == y).float().flatten(1).mean(-1)
    return ((pred - y) ** 2).flatten(1).mean(-1)


def predict(model: nn.Module, params: P.Params, x_support: Tensor, x_query: Tensor,
            transductive: bool = True) -> Tensor:
    """The model's outputs on a task's query set. Transductive (default, as the MAML paper's numbers):
    the whole query set in one batch, so BatchNorm uses its statistics. Otherwise each query is scored
    on its own, in a batch with the support set (the Reptile paper's non-transductive numbers); the same
    for models without batch statistics."""
    if transductive:
        return forward(model, params, x_query)
    one = torch.func.vmap(lambda q: forward(model, params, torch.cat([x_support, q[None]]))[-1])
    return one(x_query)


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
             chunk: int = 100, inner_state: AdamState | None = None, transductive: bool = True,
             report=None) -> EvalResult:
    """Adapt on each task's support set for 1..``inner_steps`` steps (SGD with the same step size,
    reusing the support set every step, as the MAML paper; or Adam for Reptile's Omniglot protocol)
    and score the query set after each step. The batched path runs ``chunk`` tasks at a time.
    With ``inner_state`` (Adam), every task's fine-tuning starts from that state (the Reptile code's
    evaluation); it is not changed. ``transductive=False`` scores each query on its own (see ``predict``).
    ``report``: the steps to score (default every one, 0..``inner_steps``; scoring can cost more than
    fine-tuning, e.g. 50 Adam steps scored only after 0 and 50).
    """
    maml.check_hyper(inner_lr, inner_steps)
    report = list(range(inner_steps + 1)) if report is None else sorted(set(report))
    if not report or not all(0 <= s <= inner_steps for s in report):
        raise ValueError(f"steps to report must lie in 0..{inner_steps} (the inner steps), got {report}")
    if batched is None:
        batched = prefer_batched(model)
    if batched:
        # ``chunk`` tasks at a time: bounded memory for large test sets
        chunks = [_evaluate_batched(model, params, tasks[i: i + chunk], loss_fn, inner_lr, inner_steps, metric,
                                    inner_optimizer, inner_state, transductive, report)
                  for i in range(0, len(tasks), chunk)]
        return EvalResult(chunks[0].steps, torch.cat([c.per_task for c in chunks]), metric)
    rows = []
    for task in tasks:
        row = []
        for step, phi in enumerate(trajectory(model, params, task.x_support, task.y_support, loss_fn, inner_lr,
                                              inner_steps, inner_optimizer,
                                              inner_state=None if inner_state is None else inner_state.clone())):
            if step not in report:
                continue
            with torch.no_grad():
                pred = predict(model, phi, task.x_support, task.x_query, transductive)
                row.append(score(pred[None], task.y_query[None], metric)[0])
        rows.append(torch.stack(row))
    return EvalResult(report, torch.stack(rows).cpu(), metric)


def _evaluate_batched(model, params, tasks: Task, loss_fn, inner_lr, inner_steps, metric,
                      inner_optimizer="sgd", inner_state: AdamState | None = None, transductive=True,
                      report=None) -> EvalResult:
    report = list(range(inner_steps + 1)) if report is None else report
    state = inner_state if inner_state is not None else AdamState.zeros(params)

    def per_task(d):
        return {k: v.detach().unsqueeze(0).expand(len(tasks), *v.shape) for k, v in d.items()}

    params, moments = per_task(params), (per_task(state.exp_avg), per_task(state.exp_avg_sq))
    batch_predict = torch.func.vmap(lambda p, xs, xq: predict(model, p, xs, xq, transductive))

    def step(p, m, s, x, y, t: int):
        g = inner_grads(model, loss_fn, p, x, y)
        if inner_optimizer == "adam":
            return adam_update(p, g, m, s, t, inner_lr)
        return {k: p[k] - inner_lr * g[k] for k in p}, m, s

    rows = []
    for i in range(inner_steps + 1):
        if i in report:
            with torch.no_grad():
                rows.append(score(batch_predict(params, tasks.x_support, tasks.x_query), tasks.y_query, metric))
        if i < inner_steps:
            params, *moments = torch.func.vmap(partial(step, t=state.step + i + 1))(
                params, *moments, tasks.x_support, tasks.y_support)
    return EvalResult(report, torch.stack(rows, 1).cpu(), metric)
