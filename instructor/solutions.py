"""Reference solutions to the exercises of notebooks 00-07, kept apart from the notebooks (which never
import this module) and run through their checkers by ``tests/test_checks.py``.

They live outside the ``mamlkit`` package on purpose: the wheel installs ``mamlkit*`` only, so a learner's
``import mamlkit`` cannot reach the answers (``tests/test_packaging.py`` checks the built wheel).
Instructors: ``%load -s inner_update ../instructor/solutions.py`` in a notebook reveals one function.
"""

from __future__ import annotations

import math

import torch

from mamlkit.course.checks import NOTATION as _NOTATION
from mamlkit.params import forward
from mamlkit.tasks import Task

# 00_welcome: the notation table, symbol -> name in code (public: notebook 00 prints it, its checker holds it)
NOTATION = dict(_NOTATION)


def sine(x, amplitude, phase):
    """01_tasks: the task function y = A sin(x − φ)."""
    return amplitude * torch.sin(x - phase)


def inner_update(model, theta, x, y, loss_fn, inner_lr):
    """02_inner_update: θ' = θ − α ∇_θ L(θ), keeping the graph for the outer update."""
    loss = loss_fn(forward(model, theta, x), y)
    grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
    return {name: p - inner_lr * g for (name, p), g in zip(theta.items(), grads)}


def adapt(model, theta, x, y, loss_fn, inner_lr, inner_steps):
    """02_inner_update: ``inner_steps`` inner updates on the same support set."""
    for _ in range(inner_steps):
        theta = inner_update(model, theta, x, y, loss_fn, inner_lr)
    return theta


def meta_gradient_linear(x_support, y_support, x_query, y_query, w, inner_lr):
    """03_outer_update: (I − α H_support) ∇L_query(w′) for L(w) = mean((x w − y)²), w′ = w − α ∇L_support(w)."""
    def grad(x, y, w):
        return 2 / len(x) * x.T @ (x @ w - y)

    hessian = 2 / len(x_support) * x_support.T @ x_support
    adapted = w - inner_lr * grad(x_support, y_support, w)
    identity = torch.eye(len(w), dtype=w.dtype)
    return (identity - inner_lr * hessian) @ grad(x_query, y_query, adapted)


def meta_loss(model, theta, tasks, loss_fn, inner_lr):
    """03_outer_update: mean over tasks of the query loss after one inner step (second order)."""
    losses = []
    for task in tasks:
        adapted = inner_update(model, theta, task.x_support, task.y_support, loss_fn, inner_lr)
        losses.append(loss_fn(forward(model, adapted, task.x_query), task.y_query))
    return torch.stack(losses).mean()


def ci95(per_task):
    """04_maml: mean and 95% confidence half-width 1.96 s / √n of per-task errors."""
    n = len(per_task)
    return float(per_task.mean()), float(1.96 * per_task.std(unbiased=True) / math.sqrt(n))


def first_order_gradient(model, theta, task, loss_fn, inner_lr):
    """05_first_order_maml: the FOMAML meta-gradient of one task, ∇_θ′ L_query(θ′)."""
    loss = loss_fn(forward(model, theta, task.x_support), task.y_support)
    grads = torch.autograd.grad(loss, list(theta.values()))
    adapted = {name: (p - inner_lr * g).detach().requires_grad_() for (name, p), g in zip(theta.items(), grads)}
    query = loss_fn(forward(model, adapted, task.x_query), task.y_query)
    return dict(zip(adapted, torch.autograd.grad(query, list(adapted.values()))))


def reptile_update(theta, adapted, outer_lr):
    """06_reptile: θ + ε (mean_i φ_i − θ) for a list of adapted parameter dicts φ_i."""
    return {name: p + outer_lr * (torch.stack([phi[name] for phi in adapted]).mean(0) - p)
            for name, p in theta.items()}


def significant(errors_a, errors_b):
    """07_compare: the paired test on the same tasks: True when the 95% CI of the mean per-task difference
    a − b, mean ± 1.96 s/√n, excludes 0."""
    d = errors_a - errors_b
    mean, ci = d.mean(), 1.96 * d.std() / math.sqrt(len(d))
    return bool(abs(mean) > ci)


def clusters_sample(self, n, split, shots, queries, generator, device="cpu"):
    """10_your_own_task: ``Clusters.sample`` — N-way 2-D point clusters, one rotation per task, labels
    0…ways−1 in every task, every random number from ``generator``."""
    ways, per_class = self.ways, shots + queries
    centres = 4 * torch.rand(n, ways, 1, 2, generator=generator) - 2
    points = centres + 0.3 * torch.randn(n, ways, per_class, 2, generator=generator)
    angle = 2 * math.pi * torch.rand(n, 1, 1, generator=generator)
    rotation = torch.cat([torch.cat([angle.cos(), -angle.sin()], 2), torch.cat([angle.sin(), angle.cos()], 2)], 1)
    points = points @ rotation[:, None].transpose(-1, -2)  # (n, ways, per_class, 2), each task rotated
    labels = torch.arange(ways).expand(n, ways)[..., None].expand(n, ways, per_class)

    def take(part):
        return points[:, :, part].reshape(n, -1, 2), labels[:, :, part].reshape(n, -1)

    (xs, ys), (xq, yq) = take(slice(0, shots)), take(slice(shots, None))
    return Task(xs, ys, xq, yq).to(device)


def anil_step(model, head, x, y, loss_fn, inner_lr):
    """09_beyond_maml: one SGD step on the head only (the body is the model's own), keeping the graph."""
    from mamlkit import anil

    with anil.head_only(model):
        loss = loss_fn(forward(model, head, x), y)
    grads = torch.autograd.grad(loss, list(head.values()), create_graph=True)
    return {k: v - inner_lr * g for (k, v), g in zip(head.items(), grads)}
