"""Honest evaluation: fine-tune on each fixed test task's support set for 1..k steps and report the
query MSE (or accuracy) after each, as mean ± 95% CI over the tasks.

Introduced in notebook 04_maml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import Tensor, nn

from . import params as P
from .batched import prefer_batched
from .inner import InnerLoop
from .params import forward
from .tasks import Task, as_batch


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


def paired_difference(a: EvalResult, b: EvalResult, step: int) -> tuple[float, float]:
    """Mean and 95% CI half-width (1.96 s / √n) of the per-task difference ``a − b`` after ``step`` inner
    steps: the test for two methods scored on the *same* tasks (task i of ``a`` is task i of ``b``). The
    difference is significant at the 5% level when the interval ``mean ± ci95`` excludes 0; whether the two
    methods' own intervals overlap does not decide it. NaN CI for a single task."""
    if a.per_task.shape[0] != b.per_task.shape[0] or list(a.steps) != list(b.steps) or a.metric != b.metric:
        raise ValueError(f"paired_difference needs two results on the same tasks, steps and metric; got "
                         f"{a.per_task.shape[0]} vs {b.per_task.shape[0]} tasks, steps {list(a.steps)} vs "
                         f"{list(b.steps)}, {a.metric} vs {b.metric}")
    diff = EvalResult(list(a.steps), a.per_task.double() - b.per_task.double(), a.metric)
    return diff.at(step)


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


@dataclass(frozen=True)
class Protocol:
    """How a model is fine-tuned and scored at meta-test: the inner ``loop`` (optimizer, step size,
    steps), the steps to ``report`` (default all, 0..steps; scoring can cost more than fine-tuning),
    transductive or one query at a time (see ``predict``), and ``chunk`` tasks at a time on the batched
    path (bounded memory for large test sets)."""

    loop: InnerLoop
    report: tuple | None = None
    transductive: bool = True
    chunk: int = 100

    @classmethod
    def sgd(cls, inner_lr: float, inner_steps: int, **options) -> Protocol:
        """``inner_steps`` SGD steps of ``inner_lr`` on the support set, as the MAML paper."""
        return cls(InnerLoop.sgd(inner_lr, inner_steps), **options)

    def steps(self) -> list[int]:
        steps = self.loop.steps
        report = list(range(steps + 1)) if self.report is None else sorted(set(self.report))
        if not report or not all(0 <= s <= steps for s in report):
            raise ValueError(f"steps to report must lie in 0..{steps} (the inner steps), got {report}")
        return report


def evaluate(model: nn.Module, params: P.Params, tasks: Task, loss_fn, protocol: Protocol, metric: str = "mse",
             state=None, batched: bool | None = None) -> EvalResult:
    """Fine-tune on each task's support set (reusing it every step, as the MAML paper) and score the
    query set after the protocol's reported steps. ``state``: every task's fine-tuning starts from this
    inner optimizer state (the Reptile code's kept Adam state); it is not changed."""
    tasks, report, loop = as_batch(tasks, "evaluate"), protocol.steps(), protocol.loop
    if batched is None:
        batched = prefer_batched(model)
    if batched:
        chunks = [_evaluate_batched(model, params, tasks[i: i + protocol.chunk], loss_fn, protocol, metric, state)
                  for i in range(0, len(tasks), protocol.chunk)]
        return EvalResult(report, torch.cat(chunks), metric)
    rows = []
    for task in tasks:
        path, _ = loop.trajectory(model, loss_fn, params, task.x_support, task.y_support, state, graph=False)
        with torch.no_grad():
            rows.append(torch.stack([score(predict(model, path[s], task.x_support, task.x_query, protocol.transductive)
                                           [None], task.y_query[None], metric)[0] for s in report]))
    return EvalResult(report, torch.stack(rows).cpu(), metric)


def _evaluate_batched(model, params, tasks: Task, loss_fn, protocol: Protocol, metric: str, state) -> Tensor:
    """Per-task scores of one chunk: all tasks fine-tuned together, one ``vmap``-ed inner step at a time."""
    loop, report = replace(protocol.loop, first_order=True), protocol.steps()
    state = loop.optimizer.init(params) if state is None else state
    step0 = getattr(state, "step", 0)

    def per_task(d):
        return {k: v.detach().unsqueeze(0).expand(len(tasks), *v.shape) for k, v in d.items()}

    template = state  # None (SGD), or a state of tensors (Adam's moments, the proximal step's last step)
    moments = () if state is None else tuple(v.detach().unsqueeze(0).expand(len(tasks), *v.shape)
                                             for v in state.tensors())
    params = per_task(params)
    batch_predict = torch.func.vmap(lambda p, xs, xq: predict(model, p, xs, xq, protocol.transductive))

    def one_step(p, x, y, *m, t: int):
        p, end = loop.step(model, loss_fn, p, template.with_tensors(list(m), t) if m else None, x, y, index=t - step0)
        return (p,) if end is None else (p, *end.tensors())

    rows = []
    for i in range(loop.steps + 1):
        if i in report:
            with torch.no_grad():
                rows.append(score(batch_predict(params, tasks.x_support, tasks.x_query), tasks.y_query, metric))
        if i < loop.steps:
            params, *moments = torch.func.vmap(partial(one_step, t=step0 + i))(
                params, tasks.x_support, tasks.y_support, *moments)
            params = {k: v.detach() for k, v in params.items()}
    return torch.stack(rows, 1).cpu()
