"""The meta-batch as one batched computation: ``torch.func.vmap`` over tasks and
``torch.func.grad`` for the inner step. Equal to the per-task loop in ``maml.py`` (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .params import Params
from .tasks import Task


def check_batchable(model: nn.Module) -> None:
    """The batched path needs a model without running statistics (BatchNorm on batch stats only)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            raise ValueError(
                f"batched=True cannot run {name or 'the model'} ({type(module).__name__} with running "
                "statistics): build it with track_running_stats=False (batch statistics, as MAML "
                "does), or use batched=False")


def _inner_grads(model, loss_fn, params, x, y):
    return grad(lambda p: loss_fn(functional_call(model, p, (x,)), y))(params)


def adapt_batched(model: nn.Module, params: Params, x: Tensor, y: Tensor, loss_fn, inner_lr: float,
                  inner_steps: int, first_order: bool = False) -> Params:
    """Adapt on every task at once; ``x``, ``y`` have a leading task dimension, so does the result."""
    check_batchable(model)

    def one_task(p, xs, ys):
        for _ in range(inner_steps):
            g = _inner_grads(model, loss_fn, p, xs, ys)
            if first_order:
                g = {k: v.detach() for k, v in g.items()}
            p = {k: p[k] - inner_lr * g[k] for k in p}
        return p

    return vmap(one_task, in_dims=(None, 0, 0))(params, x, y)


def batched_task_losses(model: nn.Module, params: Params, tasks: Task, loss_fn, inner_lr: float,
                        inner_steps: int, first_order: bool = False) -> Tensor:
    """Query loss of every task after adaptation, shape (tasks,)."""
    if not isinstance(tasks, Task):
        raise TypeError("batched=True needs a Task batch (tensors with a leading task dimension)")
    adapted = adapt_batched(model, params, tasks.x_support, tasks.y_support, loss_fn, inner_lr,
                            inner_steps, first_order)

    def query_loss(p, xq, yq):
        return loss_fn(functional_call(model, p, (xq,)), yq)

    return vmap(query_loss)(adapted, tasks.x_query, tasks.y_query)
