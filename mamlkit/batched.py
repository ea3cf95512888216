"""The meta-batch as one batched computation: ``torch.func.vmap`` over tasks and
``torch.func.grad`` for the inner step. Equal to the per-task loop in ``maml.py`` (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .params import Params
from .tasks import Task, step_batch

FUSED_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def check_batchable(model: nn.Module) -> None:
    """Refuse models the batched path would get wrong, naming the fix.

    Running statistics cannot be updated per task under ``vmap``, and the fused normalisation
    kernels return wrong second-order gradients under ``vmap`` (torch 2.13): use
    ``mamlkit.models.BatchNorm`` (batch statistics, plain tensor ops) instead.
    """
    for name, module in model.named_modules():
        if isinstance(module, FUSED_NORMS):
            running = getattr(module, "track_running_stats", False)
            why = ("keeps running statistics" if running
                   else "uses a fused kernel whose meta-gradient is wrong under vmap")
            raise ValueError(
                f"batched=True cannot run {name or 'the model'} ({type(module).__name__}, which {why}): "
                "replace it with mamlkit.models.BatchNorm (batch statistics only, as MAML does; set "
                "track_running_stats=False semantics), or use batched=False (the per-task loop)")


def prefer_batched(model: nn.Module) -> bool:
    """Whether the batched path is the faster default for ``model``: any model it can run, on CUDA;
    on the CPU only models without convolutions (Conv4 measured 2× slower under vmap on the CPU,
    benchmarks/README.md).
    """
    try:
        check_batchable(model)
    except ValueError:
        return False
    on_cuda = any(p.is_cuda for p in model.parameters())
    return on_cuda or not any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def inner_grads(model, loss_fn, params, x, y):
    """∇ of the support loss w.r.t. ``params`` with ``torch.func.grad`` (usable under ``vmap``)."""
    return grad(lambda p: loss_fn(functional_call(model, p, (x,)), y))(params)


def adapt_batched(model: nn.Module, params: Params, x: Tensor, y: Tensor, loss_fn, inner_lr: float,
                  inner_steps: int, first_order: bool = False, inner_optimizer: str = "sgd",
                  betas=(0.0, 0.999), eps: float = 1e-8, inner_batch: int | None = None) -> Params:
    """Adapt on every task at once; ``x``, ``y`` have a leading task dimension, so does the result.

    ``inner_optimizer="adam"`` runs ``torch.optim.Adam``'s update (Reptile's inner loop), written out
    so that it can run under ``vmap``; it is first order (used by Reptile only). ``inner_batch`` as in
    ``evaluation.trajectory``: step ``s`` uses the ``s``-th block of that many examples.
    """
    check_batchable(model)

    def one_task(p, xs, ys):
        return _adapt(model, loss_fn, p, xs, ys, inner_lr, inner_steps, first_order, inner_optimizer, betas, eps,
                      inner_batch)

    return vmap(one_task, in_dims=(None, 0, 0))(params, x, y)


def _adapt(model, loss_fn, p, xs, ys, inner_lr, inner_steps, first_order=False, inner_optimizer="sgd",
           betas=(0.0, 0.999), eps=1e-8, inner_batch=None) -> Params:
    """One task's inner loop, written for ``vmap`` (see ``adapt_batched``)."""
    if inner_optimizer == "adam":
        m = {k: torch.zeros_like(v) for k, v in p.items()}
        s = {k: torch.zeros_like(v) for k, v in p.items()}
    for t in range(1, inner_steps + 1):
        g = inner_grads(model, loss_fn, p, *step_batch(xs, ys, t - 1, inner_batch))
        if first_order or inner_optimizer == "adam":
            g = {k: v.detach() for k, v in g.items()}
        if inner_optimizer == "adam":
            p, m, s = adam_update(p, g, m, s, t, inner_lr, betas, eps)
        else:
            p = {k: p[k] - inner_lr * g[k] for k in p}
    return p


def adam_update(p, g, m, s, t: int, lr: float, betas=(0.0, 0.999), eps: float = 1e-8):
    """Step ``t`` (from 1) of torch.optim.Adam (no weight decay) as plain tensor arithmetic (usable under ``vmap``);
    β1 = 0 by default, as Reptile's inner loop."""
    b1, b2 = betas
    m = {k: b1 * m[k] + (1 - b1) * g[k] for k in p}
    s = {k: b2 * s[k] + (1 - b2) * g[k] * g[k] for k in p}
    step, root = lr / (1 - b1 ** t), (1 - b2 ** t) ** 0.5
    p = {k: p[k] - step * m[k] / (s[k].sqrt() / root + eps) for k in p}
    return p, m, s


def batched_task_losses(model: nn.Module, params: Params, tasks: Task, loss_fn, inner_lr: float,
                        inner_steps: int, first_order: bool = False) -> Tensor:
    """Query loss of every task after adaptation, shape (tasks,)."""
    if not isinstance(tasks, Task):
        raise TypeError("batched=True needs a Task batch (tensors with a leading task dimension)")
    check_batchable(model)

    def one_task(p, xs, ys, xq, yq):  # adaptation and query loss in one vmap: less overhead than two
        adapted = _adapt(model, loss_fn, p, xs, ys, inner_lr, inner_steps, first_order)
        return loss_fn(functional_call(model, adapted, (xq,)), yq)

    return vmap(one_task, in_dims=(None, 0, 0, 0, 0))(params, *tasks.tensors()[:4])
