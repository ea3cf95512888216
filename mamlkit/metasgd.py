"""Meta-SGD (Li, Zhou, Chen & Li 2017): MAML whose inner step size is learned too, one number per
parameter element: ``θ′ = θ − α ∘ ∇_θ L_support(θ)``, and the outer loop updates θ and α together with
the gradient of the query loss ``L_query(θ′)``. α starts at the configured ``inner_lr`` everywhere; it
may grow, shrink or change sign per element.

Introduced in notebook 09_beyond_maml.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import maml
from .inner import SGD, InnerLoop
from .params import Params
from .tasks import Task


def init_alpha(params: Params, inner_lr: float) -> Params:
    """α with the shape of every parameter, each element ``inner_lr``; leaves to be learned."""
    return {k: torch.full_like(v.detach(), float(inner_lr)).requires_grad_() for k, v in params.items()}


def inner_loop(alpha: Params, steps: int = 1, first_order: bool = False) -> InnerLoop:
    """``steps`` steps of ``θ ← θ − α ∘ g``: the one inner loop, with α as SGD's per-parameter step size."""
    return InnerLoop(SGD(alpha), steps, first_order)


def meta_backward(model: nn.Module, params: Params, alpha: Params, tasks: Task, loss_fn, steps: int = 1,
                  batched: bool = False, scale: float = 1.0) -> Tensor:
    """Add the meta-gradient of the mean query loss after Meta-SGD's inner loop to the ``.grad`` of θ
    (``params``) and of α (``alpha``); return the loss. MAML's ``meta_backward`` with α in the loop."""
    if alpha.keys() != params.keys():
        raise ValueError(f"alpha must have one tensor per parameter: {sorted(set(params) ^ set(alpha))} differ")
    return maml.meta_backward(model, params, tasks, loss_fn, inner_loop(alpha, steps), maml.Execution(batched), scale)


def metasgd_loss(model: nn.Module, params: Params, alpha: Params, tasks: Task, loss_fn, steps: int = 1,
                 batched: bool = False) -> Tensor:
    """The mean query loss after adaptation (differentiable w.r.t. θ and α), for checks and plots."""
    if batched:
        from .batched import batched_task_losses

        return batched_task_losses(model, params, tasks, loss_fn, inner_loop(alpha, steps)).mean()
    loop = inner_loop(alpha, steps)
    losses = [loss_fn(maml.forward(model, loop.adapt(model, loss_fn, params, t.x_support, t.y_support)[0],
                                   t.x_query), t.y_query) for t in tasks]
    return torch.stack(losses).mean()
