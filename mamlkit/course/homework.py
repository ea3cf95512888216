"""Checkers for the graded homework in ``homework/`` (nbgrader), for the exercises the course notebooks
do not have; the same one-line "✔ ..." / "✘ <hint>" feedback as ``mamlkit.course.checks``. The project
(assignment 5) has its own module, ``mamlkit.course.project``.

Introduced in homework/source/hw1_inner_update (see homework/README.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import maml, reptile
from .. import params as P
from ..inner import InnerLoop
from .checks import setup
from .feedback import Fail, call, checker, close, diagnose, expect_params, expect_unchanged


@checker
def check_adaptation_curve(fn):
    """hw1: query loss after 0, 1, …, k inner steps on the support set."""
    model, params, tasks = setup()
    task, lr, steps = tasks[0], 0.05, 3
    result = call(fn, model, params, task, F.mse_loss, lr, steps)
    if not isinstance(result, (list, tuple)) or not all(isinstance(v, (float, int)) for v in result):
        raise Fail(f"return a list of floats (use float(loss) or loss.item()), got {type(result).__name__}")
    phis = maml_trajectory(model, params, task.x_support, task.y_support, lr, steps)
    curve, support = ([F.mse_loss(P.forward(model, phi, x), y).item() for phi in phis]
                      for x, y in ((task.x_query, task.y_query), (task.x_support, task.y_support)))
    diagnose(result, {f"include the loss before adapting (step 0): {steps} steps give {steps + 1} values":
                      curve[1:] if len(result) == steps else None})
    if len(result) != steps + 1:
        raise Fail(f"expected {steps + 1} values for inner_steps={steps} (steps 0 … {steps}), got {len(result)}")
    diagnose(result, {"those are support losses: adapt on the support set, measure on the query set": support})
    if not close(result, curve):
        raise Fail("values differ from the query loss after 0 … k SGD steps of inner_lr on the support set")
    return "adaptation_curve matches the query loss after 0 … k inner steps"


def maml_trajectory(model, params, x, y, inner_lr, inner_steps):
    """The parameters after 0 … ``inner_steps`` SGD steps on the MSE (no graph)."""
    return InnerLoop.sgd(inner_lr, inner_steps).trajectory(model, F.mse_loss, params, x, y, graph=False)[0]


def _outer(model, params, tasks, lr, steps, outer_lr, first_order):
    """θ − β ∇ maml_loss, second order or first order (the reference outer update)."""
    loss = maml.maml_loss(model, params, tasks, F.mse_loss, lr, steps, first_order)
    grads = torch.autograd.grad(loss, list(params.values()))
    return P.flatten(params).detach() - outer_lr * torch.cat([g.reshape(-1) for g in grads])


def _check_outer(fn, first_order: bool, with_steps: bool):
    model, params, tasks = setup()
    lr, steps, outer_lr = 0.1, 2 if with_steps else 1, 0.05
    before = P.flatten(params).detach().clone()
    args = (model, params, tasks, F.mse_loss, lr, *((steps,) if with_steps else ()), outer_lr)
    got = expect_params(call(fn, *args), params).detach()
    expect_unchanged(params, before)
    ref, other = (_outer(model, params, tasks, lr, steps, outer_lr, fo) for fo in (first_order, not first_order))
    other_order = ("that is the First-Order MAML update: keep the graph of the inner step (create_graph=True)"
                   if not first_order else "that is the second-order MAML update: first order treats the inner "
                   "gradient as a constant (create_graph=False, or detach θ′) and takes ∇ at θ′")
    diagnose(got, {
        other_order: None if close(ref, other) else other,
        "wrong sign: the outer update steps downhill, θ − β ∇ (mean_i L_query(θ′_i))": 2 * before - ref,
        f"you summed over the {len(tasks)} tasks: average the query losses (or gradients)":
            before - len(tasks) * (before - ref),
        "the meta-gradient is not scaled by outer_lr (β)": before - (before - ref) / outer_lr,
        f"you took 1 inner step instead of inner_steps={steps}":
            _outer(model, params, tasks, lr, 1, outer_lr, first_order) if with_steps else None,
    })
    if not close(got, ref):
        raise Fail("values differ from θ − β ∇_θ mean_i L_query(θ′_i): adapt on support, evaluate on query")


@checker
def check_outer_update(fn):
    """hw2: one plain-SGD outer update θ − β ∇_θ mean_i L_query(θ′_i), second order."""
    _check_outer(fn, first_order=False, with_steps=False)
    return "outer_update equals θ − β × the second-order meta-gradient (mamlkit.maml.maml_loss)"


@checker
def check_fomaml_update(fn):
    """hw3: one First-Order MAML outer update after ``inner_steps`` inner steps."""
    _check_outer(fn, first_order=True, with_steps=True)
    return "fomaml_update equals θ − β mean_i ∇_θ′ L_query(θ′_i), no Hessian term"


@checker
def check_reptile_step(fn):
    """hw4: adapt each task with k SGD steps to φ_i, then θ + ε (mean_i φ_i − θ)."""
    model, params, tasks = setup()
    theta, lr, steps, eps = P.detach(params), 0.05, 3, 0.3
    before = P.flatten(theta).clone()
    got = expect_params(call(fn, model, theta, tasks, F.mse_loss, lr, steps, eps), theta).detach()
    expect_unchanged(theta, before)
    step = lambda k, e=eps: P.flatten(reptile.reptile_step(model, theta, tasks, F.mse_loss, lr, k, e))
    ref = step(steps)
    diagnose(got, {
        "wrong sign: Reptile moves θ toward the adapted φ_i, θ + ε (mean φ − θ)": 2 * before - ref,
        "you moved all the way to mean φ: scale the move by ε (outer_lr)": step(steps, 1.0),
        "you summed over tasks: average the φ_i": before + len(tasks) * (ref - before),
        **{f"φ_i took {k} inner step(s) instead of inner_steps={steps}": step(k) for k in (1, steps - 1, steps + 1)},
    })
    if not close(got, ref):
        raise Fail("values differ from θ + ε (mean_i φ_i − θ), φ_i = k SGD steps on task i's support set")
    return "reptile_step matches mamlkit.reptile.reptile_step"
