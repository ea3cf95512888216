"""Sharpness: the largest eigenvalue λ_max of the Hessian of a task's support loss, by power
iteration on Hessian-vector products (no Hessian is ever formed), for many tasks at once.

Plain gradient descent with step α on a quadratic diverges along any direction whose curvature
exceeds 2/α, so ``α·λ_max`` against 2 is the first thing to measure when fine-tuning blows up;
``along_fine_tuning`` follows it step by step, because on a network the curvature moves with θ′.

Introduced in notebook 04_maml.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from . import params as P
from .tasks import Task, as_batch

ITERATIONS = 50  # power iterations per eigenvalue (the tests check the accuracy this gives)


def _loss_fn(model, loss_fn):
    return lambda p, x, y: loss_fn(P.forward(model, p, x), y)


def _power(hvp, start: P.Params, shift: Tensor, iterations: int) -> Tensor:
    """The Rayleigh quotient vᵀHv / vᵀv of H at the vector that power iteration on ``H + shift·I`` reaches."""
    v = start
    for _ in range(iterations):
        hv = {k: h + shift * v[k] for k, h in hvp(v).items()}
        n = P.norm(hv).to(shift.dtype).clamp_min(torch.finfo(shift.dtype).tiny)
        v = {k: h / n for k, h in hv.items()}
    hv = hvp(v)
    return sum((hv[k] * v[k]).sum() for k in v) / sum((v[k] ** 2).sum() for k in v)


def start_vector(params: P.Params, seed: int = 0) -> P.Params:
    """The power iteration's fixed random start (drawn outside ``vmap``, the same for every task)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device) for k, v in params.items()}


def top_eigenvalue(model: nn.Module, params: P.Params, x: Tensor, y: Tensor, loss_fn,
                   iterations: int = ITERATIONS, start: P.Params | None = None) -> Tensor:
    """λ_max (the most positive eigenvalue) of the Hessian of ``loss_fn(model(x), y)`` at ``params``.

    Power iteration first finds the eigenvalue of largest magnitude μ; a second one on ``H + |μ|·I``
    (whose eigenvalues all lie in [0, 2|μ|]) then finds λ_max even when a negative eigenvalue is larger
    in magnitude. Runs under ``vmap`` (``tasks_top_eigenvalue``)."""
    f = _loss_fn(model, loss_fn)
    g = grad(f)

    def hvp(v):  # reverse over reverse: forward over reverse trips on F.mse_loss's double backward (torch 2.13)
        return grad(lambda q: sum((gk * v[k]).sum() for k, gk in g(q, x, y).items()))(params)

    start = start_vector(params) if start is None else start
    zero = torch.zeros((), dtype=next(iter(params.values())).dtype, device=next(iter(params.values())).device)
    mu = _power(hvp, start, zero, iterations)
    return _power(hvp, start, mu.abs(), iterations)


def tasks_top_eigenvalue(model: nn.Module, params: P.Params, tasks: Task, loss_fn,
                         iterations: int = ITERATIONS, per_task_params: bool = False) -> Tensor:
    """λ_max of each task's support loss (one value per task), all tasks in one ``vmap``.

    ``params``: one θ for all tasks, or with ``per_task_params`` a leading task dimension (θ′ᵢ)."""
    tasks = as_batch(tasks, "tasks_top_eigenvalue")
    if not per_task_params:
        params = {k: v.detach().expand(len(tasks), *v.shape).clone() for k, v in params.items()}
    start = start_vector({k: v[0] for k, v in params.items()})
    one = lambda p, x, y: top_eigenvalue(model, p, x, y, loss_fn, iterations, start)  # noqa: E731
    return vmap(one)(params, tasks.x_support, tasks.y_support)


def along_fine_tuning(model: nn.Module, params: P.Params, tasks: Task, loss_fn, inner_lr: float,
                      steps: int, iterations: int = ITERATIONS) -> tuple[Tensor, Tensor]:
    """Fine-tune every task with ``steps`` SGD steps of ``inner_lr`` on its support set and return
    ``(sharpness, query_loss)``, each ``(tasks, steps + 1)``: ``inner_lr·λ_max`` of the support loss
    and the query loss at θ, θ′₁, …, θ′ₛ (a step above 2 overshoots along its top direction)."""
    tasks = as_batch(tasks, "along_fine_tuning")
    f = _loss_fn(model, loss_fn)
    p = {k: v.detach().expand(len(tasks), *v.shape).clone() for k, v in params.items()}
    sharp, query = [], []
    for step in range(steps + 1):
        sharp.append(inner_lr * tasks_top_eigenvalue(model, p, tasks, loss_fn, iterations, per_task_params=True))
        with torch.no_grad():
            query.append(vmap(f)(p, tasks.x_query, tasks.y_query))
        if step < steps:
            g = vmap(grad(f))(p, tasks.x_support, tasks.y_support)
            p = {k: (p[k] - inner_lr * g[k]).detach() for k in p}
    return torch.stack(sharp, 1), torch.stack(query, 1)
