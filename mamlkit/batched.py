"""The meta-batch as one batched computation: ``torch.func.vmap`` over tasks and
``torch.func.grad`` for the inner step. Equal to the per-task loop in ``maml.py`` (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .adam import BETAS, AdamState, adam_update  # noqa: F401  (adam_update: former home)
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
                  betas=BETAS, eps: float = 1e-8, inner_batch: int | None = None,
                  inner_state: AdamState | None = None) -> Params:
    """Adapt on every task at once; ``x``, ``y`` have a leading task dimension, so does the result.

    ``inner_optimizer="adam"`` runs ``torch.optim.Adam``'s update (Reptile's inner loop), written out
    so that it can run under ``vmap``; it is first order (used by Reptile only). ``inner_batch`` as in
    ``evaluation.trajectory``: step ``s`` uses the ``s``-th block of that many examples.

    ``inner_state`` (Adam only): every task starts from it, and it is left at the tasks' mean state
    after their steps (step count + ``inner_steps``), the parallel counterpart of the per-task loop,
    where each task continues from the one before.
    """
    check_batchable(model)
    if inner_optimizer != "adam":
        if inner_state is not None:
            raise ValueError("inner_state is the inner Adam's state: use it with inner_optimizer='adam'")
        return vmap(lambda p, xs, ys: _adapt(model, loss_fn, p, xs, ys, inner_lr, inner_steps, first_order,
                                             inner_batch=inner_batch)[0], in_dims=(None, 0, 0))(params, x, y)
    state = inner_state if inner_state is not None else AdamState.zeros(params)

    def one_task(p, xs, ys, m, s):
        return _adapt(model, loss_fn, p, xs, ys, inner_lr, inner_steps, True, "adam", betas, eps, inner_batch,
                      (m, s, state.step))

    phis, m, s = vmap(one_task, in_dims=(None, 0, 0, None, None))(params, x, y, state.exp_avg, state.exp_avg_sq)
    if inner_state is not None:
        inner_state.step += inner_steps
        inner_state.exp_avg = {k: v.detach().mean(0) for k, v in m.items()}
        inner_state.exp_avg_sq = {k: v.detach().mean(0) for k, v in s.items()}
    return phis


def _adapt(model, loss_fn, p, xs, ys, inner_lr, inner_steps, first_order=False, inner_optimizer="sgd",
           betas=BETAS, eps=1e-8, inner_batch=None, adam=None):
    """One task's inner loop, written for ``vmap`` (see ``adapt_batched``); returns the adapted
    parameters and Adam's moments (starting from ``adam = (m, s, step)``, zeros by default; ``None``
    for SGD)."""
    if inner_optimizer == "adam" and adam is None:
        adam = ({k: torch.zeros_like(v) for k, v in p.items()}, {k: torch.zeros_like(v) for k, v in p.items()}, 0)
    m, s, t0 = adam if adam is not None else (None, None, 0)
    for t in range(1, inner_steps + 1):
        g = inner_grads(model, loss_fn, p, *step_batch(xs, ys, t - 1, inner_batch))
        if first_order or inner_optimizer == "adam":
            g = {k: v.detach() for k, v in g.items()}
        if inner_optimizer == "adam":
            p, m, s = adam_update(p, g, m, s, t0 + t, inner_lr, betas, eps)
        else:
            p = {k: p[k] - inner_lr * g[k] for k in p}
    return p, m, s


def batched_task_losses(model: nn.Module, params: Params, tasks: Task, loss_fn, inner_lr: float,
                        inner_steps: int, first_order: bool = False) -> Tensor:
    """Query loss of every task after adaptation, shape (tasks,)."""
    if not isinstance(tasks, Task):
        raise TypeError("batched=True needs a Task batch (tensors with a leading task dimension)")
    check_batchable(model)

    def one_task(p, xs, ys, xq, yq):  # adaptation and query loss in one vmap: less overhead than two
        adapted, *_ = _adapt(model, loss_fn, p, xs, ys, inner_lr, inner_steps, first_order)
        return loss_fn(functional_call(model, adapted, (xq,)), yq)

    return vmap(one_task, in_dims=(None, 0, 0, 0, 0))(params, *tasks.tensors()[:4])
