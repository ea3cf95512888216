"""MAML++ (Antoniou, Edwards & Storkey 2019), the three changes that stabilise MAML's training here:

- LSLR, learned per-layer per-step step sizes: ``θ_{s+1} = θ_s − α_{k,s} ∇ L_support(θ_s)`` with one
  learned number ``α_{k,s}`` per parameter tensor ``k`` and inner step ``s`` (starting at ``inner_lr``).
  Fine-tuning past the trained steps reuses the last step's α.
- MSL, the multi-step loss: the query loss after *every* inner step, ``Σ_s w_s L_query(θ_s)``, with weights
  that start uniform and anneal toward the last step over the first ``msl_iterations`` iterations
  (``msl_weights``, as the authors' code), after which only the last step counts.
- DOA, derivative-order annealing: first-order meta-gradients for the first ``first_order_iterations``
  iterations, second order after.

With all three off it is MAML (tested). Introduced in notebook 09_beyond_maml.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import vmap

from .batched import check_batchable
from .inner import SGD, InnerLoop, StepwiseSGD
from .params import Params, forward
from .tasks import Task

MIN_WEIGHT = 0.03  # × 1/steps: the authors' floor for the weight of a step before the last while annealing


def msl_weights(steps: int, iteration: int, anneal_iterations: int) -> list[float]:
    """The multi-step loss's weight of the query loss after each inner step 1..``steps``: ``1/steps`` each
    at iteration 0; the earlier ones fall by ``1/(steps·anneal_iterations)`` per iteration (to a floor of
    ``0.03/steps``) and the last gains what they lose; from ``anneal_iterations`` on, ``[0, …, 0, 1]``.
    They always sum to 1."""
    if iteration >= anneal_iterations:
        return [0.0] * (steps - 1) + [1.0]
    decay = iteration / (steps * anneal_iterations)
    floor = MIN_WEIGHT / steps
    early = [max(1 / steps - decay, floor)] * (steps - 1)
    return early + [1.0 - sum(early)]


def init_lslr(params: Params, inner_lr: float, steps: int) -> Params:
    """One learned step size per parameter tensor and inner step, all ``inner_lr``: shape ``(steps,)``."""
    return {k: torch.full((steps,), float(inner_lr), dtype=v.dtype, device=v.device).requires_grad_()
            for k, v in params.items()}


def first_order_at(iteration: int, first_order_iterations: int | None) -> bool:
    """DOA: whether the meta-gradient after ``iteration`` updates is first order (``None``: never)."""
    return first_order_iterations is not None and iteration < first_order_iterations


@dataclass(frozen=True)
class Schedule:
    """What MAML++ does at one iteration: the inner loop (with LSLR's per-step α, or a fixed scalar, and
    first or second order) and the weights of the query losses after steps 1..k."""

    loop: InnerLoop
    weights: tuple

    @classmethod
    def at(cls, iteration: int, steps: int, inner_lr: float, lslr: Params | None = None, msl: int | None = None,
           first_order_iterations: int | None = None) -> Schedule:
        """``lslr``: the learned α (``None``: SGD with ``inner_lr``); ``msl``: the annealing length
        (``None``: the last step's loss only); ``first_order_iterations``: DOA (``None``: second order)."""
        optimizer = SGD(inner_lr) if lslr is None else StepwiseSGD(lslr)
        first_order = first_order_at(iteration, first_order_iterations)
        weights = msl_weights(steps, iteration, msl) if msl is not None else [0.0] * (steps - 1) + [1.0]
        return cls(InnerLoop(optimizer, steps, first_order), tuple(weights))


def task_loss(model: nn.Module, params: Params, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, loss_fn,
              schedule: Schedule) -> Tensor:
    """``Σ_s w_s L_query(θ_s)`` of one task (steps with weight 0 are not scored)."""
    path, _ = schedule.loop.trajectory(model, loss_fn, params, xs, ys)
    return sum(w * loss_fn(forward(model, path[s + 1], xq), yq) for s, w in enumerate(schedule.weights) if w)


def mamlpp_loss(model: nn.Module, params: Params, tasks: Task, loss_fn, schedule: Schedule,
                batched: bool = False) -> Tensor:
    """The mean over tasks of the (multi-step) query loss, differentiable w.r.t. θ and the learned α."""
    if batched:
        check_batchable(model)
        one = vmap(lambda p, *t: task_loss(model, p, *t, loss_fn, schedule), in_dims=(None, 0, 0, 0, 0))
        return one(params, *tasks.tensors()[:4]).mean()
    return torch.stack([task_loss(model, params, *t.tensors()[:4], loss_fn, schedule) for t in tasks]).mean()


def meta_backward(model: nn.Module, params: Params, tasks: Task, loss_fn, schedule: Schedule,
                  batched: bool = False, scale: float = 1.0) -> Tensor:
    """Add the meta-gradient (θ, and α under LSLR) of ``mamlpp_loss`` to the ``.grad``s; return the loss.
    The loop backpropagates task by task (one task's graph alive at a time), as ``maml.meta_backward``."""
    if batched:
        loss = mamlpp_loss(model, params, tasks, loss_fn, schedule, batched=True)
        (scale * loss).backward()
        return loss.detach()
    total = torch.zeros(())
    for task in tasks:
        loss = task_loss(model, params, *task.tensors()[:4], loss_fn, schedule) / len(tasks)
        (scale * loss).backward()
        total = total.to(loss.device) + loss.detach()
    return total
