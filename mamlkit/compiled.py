"""MAML's meta-gradient as one compiled function (issue 16, ``--compile``).

The batched path builds an autograd graph of a few hundred small operations every meta-iteration and then
walks it back; on the sine MLP that is Python and dispatch overhead, not arithmetic. Here the meta-gradient
is a *function* instead: ``torch.func.grad`` of the mean query loss, whose inner steps take
``torch.func.grad`` of the support loss under ``vmap`` over tasks (the same ``InnerLoop`` as every other path).
``torch.compile`` traces it once into one graph of fused kernels. Nothing is differentiated after the compiled
call — it returns the gradient — so the double backward that ``torch.compile`` cannot do through a compiled
graph is never needed. The per-task loop stays the oracle (``tests/test_compiled.py``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from .inner import SGD, InnerLoop
from .params import Params, forward
from .tasks import Task

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(loss_fn, loop): function}


def check_compilable(loop: InnerLoop) -> None:
    if not isinstance(loop.optimizer, SGD) or isinstance(loop.optimizer.lr, dict) or loop.batch is not None:
        raise ValueError("compile runs MAML's inner loop of plain SGD steps (one step size); drop --compile "
                         "for other inner optimizers")


def meta_gradient_function(model: nn.Module, loss_fn, loop: InnerLoop) -> Callable:
    """``f(params, xs, ys, xq, yq) -> (gradient dict, mean query loss)``, compiled on first call and kept
    for ``model`` (a new shape or ``first_order`` compiles once more)."""
    check_compilable(loop)
    cache = _COMPILED.setdefault(model, {})
    key = (loss_fn, loop)
    if key not in cache:
        def mean_query_loss(params: Params, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> Tensor:
            def one_task(x_s, y_s, x_q, y_q):
                adapted, _ = loop.adapt(model, loss_fn, params, x_s, y_s)
                return loss_fn(forward(model, adapted, x_q), y_q)

            return vmap(one_task)(xs, ys, xq, yq).mean()

        cache[key] = torch.compile(grad_and_value(mean_query_loss), dynamic=False)
    return cache[key]


def meta_backward_compiled(model: nn.Module, params: Params, tasks: Task, loss_fn, loop: InnerLoop,
                           scale: float = 1.0) -> Tensor:
    """Add ``scale`` × the meta-gradient to ``params``' ``.grad`` (as ``maml.meta_backward``); return the loss."""
    if not isinstance(tasks, Task):
        raise TypeError("compile needs a Task batch (tensors with a leading task dimension)")
    fn = meta_gradient_function(model, loss_fn, loop)
    grads, loss = fn({k: v.detach() for k, v in params.items()}, *tasks.tensors()[:4])
    for k, p in params.items():
        p.grad = scale * grads[k] if p.grad is None else p.grad + scale * grads[k]
    return loss
