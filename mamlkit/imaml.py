"""iMAML (Rajeswaran et al. 2019): adapt by solving the proximal inner problem

    φ* = argmin_φ  L_support(φ) + λ/2 ‖φ − θ‖²

and meta-learn θ with the implicit meta-gradient ``dφ*/dθ ᵀ ∇L_query(φ*) = (I + H/λ)⁻¹ ∇L_query(φ*)``
(``H`` the Hessian of the support loss at φ*), solved by conjugate gradient with Hessian-vector
products. The inner steps run without a graph: the memory of a meta-gradient does not depend on how
many there are (MAML's grows linearly), only the one graph of ∇L_support at φ* is kept, for the
Hessian-vector products.

The inner solver is the shared inner loop (``inner.InnerLoop``) with ``ProximalSGD``, gradient descent
on the regularised objective, so evaluation and the batched path adapt the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .inner import InnerLoop, LossFn
from .params import Params, forward
from .tasks import Task, as_batch

LAMBDA = 2.0  # λ, the proximal regulariser's strength (default of Config.imaml_lambda)
CG_STEPS = 5  # conjugate-gradient iterations per task (default of Config.cg_steps)


def check_settings(lam: float, cg_steps: int | None = None, cg_tol: float = 0.0) -> None:
    """Refuse a λ or CG setting that cannot work, saying what to change."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (lam > 0 and math.isfinite(lam)):
        raise ValueError(f"imaml lambda must be a finite number > 0 (the proximal term λ/2 |φ − θ|²), got {lam!r}; "
                         f"try {LAMBDA}")
    if cg_steps is not None and (isinstance(cg_steps, bool) or not isinstance(cg_steps, int) or cg_steps < 1):
        raise ValueError(f"cg_steps must be an integer >= 1 (conjugate-gradient iterations), got {cg_steps!r}; "
                         f"try {CG_STEPS}")
    if isinstance(cg_tol, bool) or not isinstance(cg_tol, (int, float)) or not (0 <= cg_tol < 1):
        raise ValueError(f"cg_tol must be a number in [0, 1) (relative residual to stop at), got {cg_tol!r}")


@dataclass
class ProximalState:
    """The point the last step started from (``previous``), the proximal gradient there (``gradient``) and
    the step size taken from it (``lr``, a tensor; 0 before the first step)."""

    previous: Params
    gradient: Params
    lr: Tensor

    def tensors(self) -> list[Tensor]:
        return [*self.previous.values(), *self.gradient.values(), self.lr]

    def with_tensors(self, tensors: list[Tensor], step: int = 0) -> ProximalState:
        """The same state with ``tensors`` (in ``tensors()``'s order) in place of its own."""
        n = len(self.previous)
        return ProximalState(dict(zip(self.previous, tensors[:n])), dict(zip(self.gradient, tensors[n:2 * n])),
                             tensors[2 * n])


@dataclass(frozen=True)
class ProximalSGD:
    """One gradient step on the proximal objective: ``φ ← φ − η (∇L(φ) + λ (φ − θ))``, ``θ = anchor``.

    Plain gradient descent (``η = α``, ``safeguard=False``) converges only for ``α (λ + L) < 2`` (``L`` the
    support loss's largest curvature), and meta-training sharpens θ until it no longer does (in a sine probe
    α·λ_max grew from 0.27 to 3.5, where the loss became NaN). The safeguard (the default) measures the
    curvature along the last step, ``L̂ = ‖Δ∇‖ / ‖Δφ‖`` (the local Lipschitz estimate of Malitsky & Mishchenko
    2020), and

    - rejects the last step if it was too long for that curvature (``η L̂ > 2``: the objective may have gone up)
      and steps again from where it started;
    - takes ``η = min(α, 1 / L̂)``: never more than α, smaller only where the objective is too curved for α.

    Where ``α (λ + L) < 1`` it never binds (plain steps of α). Each gradient evaluation is one of the loop's
    ``steps``, a rejected one included. The anchor is the same for every task (the meta-parameters), so it is
    held here; the last step lives in a per-task ``ProximalState`` of tensors: the step runs in the per-task loop
    and under ``vmap`` alike."""

    lr: float
    lam: float
    anchor: Params
    safeguard: bool = True

    def __post_init__(self):
        check_settings(self.lam)

    def init(self, params: Params) -> ProximalState:
        first = next(iter(params.values()))
        return ProximalState({k: v.detach() for k, v in params.items()},
                             {k: torch.zeros_like(v).detach() for k, v in params.items()},
                             torch.zeros((), dtype=first.dtype, device=first.device))

    def update(self, params: Params, grads: Params, state: ProximalState) -> tuple[Params, ProximalState]:
        if state is None:
            raise ValueError("ProximalSGD keeps the last step in its state: start from .init(params)")
        gradient = {k: grads[k] + self.lam * (p - self.anchor[k]) for k, p in params.items()}
        if not self.safeguard:
            lr = torch.full_like(state.lr, self.lr)
            return {k: p - self.lr * gradient[k] for k, p in params.items()}, ProximalState(params, gradient, lr)
        moved = _norm([params[k] - state.previous[k] for k in params])
        turned = _norm([gradient[k] - state.gradient[k] for k in params])
        curvature = torch.where(moved > 0, turned / torch.where(moved > 0, moved, torch.ones_like(moved)), 0.0)
        reject = state.lr * curvature > 2  # the last step overshot: start again from where it began
        base = {k: torch.where(reject, state.previous[k], p) for k, p in params.items()}
        base_gradient = {k: torch.where(reject, state.gradient[k], g) for k, g in gradient.items()}
        lr = self.lr / torch.clamp(self.lr * curvature, min=1.0)  # min(α, 1 / L̂); α before the first step
        return {k: p - lr * base_gradient[k] for k, p in base.items()}, ProximalState(base, base_gradient, lr)


def _norm(tensors: list[Tensor]) -> Tensor:
    return torch.sqrt(sum((t.detach() ** 2).sum() for t in tensors))


def proximal_loop(theta: Params, lam: float, lr: float, steps: int, safeguard: bool = True) -> InnerLoop:
    """The inner loop solving the proximal problem anchored at ``theta`` by ``steps`` steps of ``lr``
    (at most; see ``ProximalSGD.safeguard``), first order: nothing is differentiated through it."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"inner_steps must be an integer >= 1 for iMAML (gradient steps on the proximal "
                         f"problem), got {steps!r}")
    anchor = {k: v.detach() for k, v in theta.items()}
    return InnerLoop(ProximalSGD(lr, lam, anchor, safeguard), steps, first_order=True)


def proximal_solution(model: nn.Module, loss_fn: LossFn, theta: Params, task: Task, settings: IMAML) -> Params:
    """``φ*`` (approximately) for ``task``'s support set: ``settings.steps`` gradient steps of (at most)
    ``settings.lr`` on ``L(φ) + λ/2 ‖φ − θ‖²`` from ``θ`` (safeguarded unless ``settings.safeguard`` is off),
    without a graph."""
    return settings.loop(theta).adapt(model, loss_fn, theta, task.x_support, task.y_support, graph=False)[0]


@dataclass
class CGResult:
    """The solution of ``(I + H/λ) v = b`` (a parameter dict), the relative residual ``‖b − A v‖ / ‖b‖``
    after the last iteration (the CG recurrence's), and the iterations run."""

    solution: Params
    residual: float
    iterations: int


def _dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return sum((u * v).sum() for u, v in zip(a, b))


def conjugate_gradient(matvec: Callable[[list[Tensor]], list[Tensor]], b: list[Tensor], steps: int,
                       tol: float = 0.0, early_exit: bool = True) -> tuple[list[Tensor], Tensor, Tensor]:
    """Solve ``A v = b`` for a symmetric positive definite ``A`` given as ``matvec``, from ``v = 0``: at most
    ``steps`` iterations, stopping once ``‖r‖ ≤ tol ‖b‖``, or when ``A`` shows a direction of non-positive
    curvature (φ far from a minimum of a non-convex loss; the current ``v`` is kept and the residual says
    so). Returns the iterate with the smallest residual (on an indefinite system, as at a φ far from a
    minimum, later iterates can blow up; on a positive definite one it is in practice the last), its
    ``‖r‖ / ‖b‖`` and the iterations run, the last two as tensors.

    Written with tensor operations only (a finished solve is frozen by masks, not by a ``break``), so it
    runs under ``vmap`` with one solve per task; ``early_exit`` (outside ``vmap``) skips the iterations
    after it has finished."""
    v = [torch.zeros_like(t) for t in b]
    r, p = list(b), list(b)
    rs = _dot(r, r)
    b_norm = rs.sqrt()
    active = b_norm > 0
    best, best_rs = v, rs
    iterations = torch.zeros((), dtype=torch.long, device=b_norm.device)
    for _ in range(steps):
        if early_exit and not bool(active):
            break
        ap = matvec(p)
        curvature = _dot(p, ap)
        active = active & (curvature > 0)
        alpha = torch.where(active, rs / torch.where(active, curvature, torch.ones_like(curvature)), 0.0)
        v = [vi + alpha * pi for vi, pi in zip(v, p)]
        r = [ri - alpha * api for ri, api in zip(r, ap)]
        rs_new = torch.where(active, _dot(r, r), rs)
        beta = torch.where(active & (rs > 0), rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), 0.0)
        p = [ri + beta * pi for ri, pi in zip(r, p)]
        iterations = iterations + active.long()
        rs = rs_new
        better = rs < best_rs
        best = [torch.where(better, vi, bi) for vi, bi in zip(v, best)]
        best_rs = torch.where(better, rs, best_rs)
        active = active & (rs.sqrt() > tol * b_norm)
    residual = torch.where(b_norm > 0, best_rs.sqrt() / torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm)),
                           0.0)
    return best, residual, iterations


def implicit_gradient(model: nn.Module, loss_fn: LossFn, phi: Params, task: Task, query_grad: Params,
                      settings: IMAML) -> CGResult:
    """``(I + H/λ)⁻¹ g`` for ``g = query_grad``, ``H`` the Hessian of ``task``'s support loss at ``phi``, by
    ``settings.cg_steps`` iterations of conjugate gradient (λ = ``settings.lam``, early stop at
    ``settings.cg_tol``); each Hessian-vector product is a double backward through the one graph of
    ``∇L_support(φ)``."""
    lam, cg_steps, cg_tol = settings.lam, settings.cg_steps, settings.cg_tol
    x_support, y_support = task.x_support, task.y_support
    names = list(phi)
    leaves = [phi[k].detach().requires_grad_() for k in names]
    with torch.enable_grad():
        loss = loss_fn(forward(model, dict(zip(names, leaves)), x_support), y_support)
        grads = torch.autograd.grad(loss, leaves, create_graph=True)

    live = [i for i, g in enumerate(grads) if g.requires_grad]  # a gradient constant in φ has no Hessian row

    def matvec(vec: list[Tensor]) -> list[Tensor]:  # (I + H/λ) v
        hv = [None] * len(vec)
        if live:
            hv = torch.autograd.grad([grads[i] for i in live], leaves, grad_outputs=[vec[i] for i in live],
                                     retain_graph=True, allow_unused=True)
        return [v + (torch.zeros_like(v) if h is None else h) / lam for v, h in zip(vec, hv)]

    b = [query_grad[k].detach() for k in names]
    v, residual, iterations = conjugate_gradient(matvec, b, cg_steps, cg_tol)
    return CGResult(dict(zip(names, v)), float(residual), int(iterations))


@dataclass(frozen=True)
class IMAML:
    """iMAML's settings: ``lam`` (λ), the inner solver (``steps`` gradient steps of ``lr`` on the proximal
    problem, the step safeguarded unless ``safeguard=False``) and the CG solve (``cg_steps`` iterations,
    stopping early at relative residual ``cg_tol``)."""

    lam: float = LAMBDA
    lr: float = 0.01
    steps: int = 10
    cg_steps: int = CG_STEPS
    cg_tol: float = 0.0
    safeguard: bool = True

    def __post_init__(self):
        check_settings(self.lam, self.cg_steps, self.cg_tol)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"inner_lr must be a number > 0 (the proximal gradient step), got {self.lr!r}")
        proximal_loop({}, self.lam, self.lr, self.steps)  # checks steps

    def loop(self, theta: Params) -> InnerLoop:
        return proximal_loop(theta, self.lam, self.lr, self.steps, self.safeguard)


def meta_backward(model: nn.Module, params: Params, tasks: Task, loss_fn: LossFn, settings: IMAML,
                  scale: float = 1.0, solver: Callable[[Params, Task], Params] | None = None,
                  batched: bool = False) -> tuple[Tensor, float]:
    """Add ``scale`` × the implicit meta-gradient of the mean query loss to ``params``' ``.grad``; return
    ``(mean query loss, largest relative CG residual over the tasks)``.

    Per task: ``φ*`` by the proximal inner loop without a graph (or ``solver(θ, task)``, e.g. a closed
    form), ``g = ∇L_query(φ*)``, then ``(I + H/λ)⁻¹ g`` by CG. The loop keeps one task's support graph
    alive at a time, and none of the inner steps'; ``batched=True`` runs all tasks at once under ``vmap``
    (Hessian-vector products by ``torch.func.vjp`` of the gradient; the same values)."""
    tasks = as_batch(tasks, "imaml.meta_backward")
    if len(tasks) < 1:
        raise ValueError("imaml.meta_backward needs at least one task")
    names = list(params)
    if batched:
        if solver is not None:
            raise ValueError("imaml.meta_backward: a custom solver runs in the per-task loop; pass batched=False")
        solution, losses, residuals = _batched(model, params, tasks, loss_fn, settings)
        for k in names:
            _accumulate(params[k], solution[k].mean(0) * scale)
        return losses.mean().detach(), float(residuals.max())
    total, residual = torch.zeros((), device=next(iter(params.values())).device), 0.0
    loop = settings.loop(params)
    for task in tasks:
        if solver is None:
            phi = loop.adapt(model, loss_fn, params, task.x_support, task.y_support, graph=False)[0]
        else:
            phi = {k: v.detach() for k, v in solver(params, task).items()}
        leaves = {k: phi[k].requires_grad_() for k in names}
        with torch.enable_grad():
            query = loss_fn(forward(model, leaves, task.x_query), task.y_query)
            query_grad = dict(zip(names, torch.autograd.grad(query, list(leaves.values()))))
        solved = implicit_gradient(model, loss_fn, phi, task, query_grad, settings)
        for k in names:
            _accumulate(params[k], solved.solution[k] * (scale / len(tasks)))
        total = total + query.detach() / len(tasks)
        residual = max(residual, solved.residual)
    return total, residual


def _accumulate(p: Tensor, g: Tensor) -> None:
    g = g.detach().to(p.dtype)
    p.grad = g if p.grad is None else p.grad + g


def _batched(model: nn.Module, params: Params, tasks: Task, loss_fn: LossFn, settings: IMAML):
    """Every task's implicit gradient (a dict of stacked tensors), query loss and CG residual, in one ``vmap``."""
    from .batched import check_batchable

    check_batchable(model)
    loop, names, lam = settings.loop(params), list(params), settings.lam
    theta = {k: v.detach() for k, v in params.items()}

    def one_task(xs, ys, xq, yq):
        phi = loop.adapt(model, loss_fn, theta, xs, ys, graph=False)[0]
        query_grad, query = torch.func.grad_and_value(lambda p: loss_fn(functional_call(model, p, (xq,)), yq))(phi)
        support_grad = torch.func.grad(lambda p: loss_fn(functional_call(model, p, (xs,)), ys))
        _, hvp = torch.func.vjp(support_grad, phi)  # H v = vjp of the gradient (H is symmetric)

        def matvec(vec: list[Tensor]) -> list[Tensor]:  # (I + H/λ) v
            hv = hvp(dict(zip(names, vec)))[0]
            return [v + hv[k] / lam for v, k in zip(vec, names)]

        v, residual, _ = conjugate_gradient(matvec, [query_grad[k] for k in names], settings.cg_steps,
                                            settings.cg_tol, early_exit=False)
        return dict(zip(names, v)), query, residual

    return torch.func.vmap(one_task)(*tasks.tensors()[:4])
