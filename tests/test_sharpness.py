"""``sharpness``: λ_max by power iteration on Hessian-vector products, against the eigenvalues of the
Hessian formed in full (float64), and the fine-tuning trajectory against a plain loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mamlkit import params as P
from mamlkit import sharpness
from mamlkit.models import MLP
from mamlkit.tasks import sine_test_tasks


def exact_top(model, theta, x, y, loss_fn):
    names = list(theta)
    shapes = [theta[k].shape for k in names]
    sizes = [theta[k].numel() for k in names]

    def f(flat):
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(flat.split(sizes), shapes))))
        return loss_fn(P.forward(model, parts, x), y)

    hessian = torch.autograd.functional.hessian(f, P.flatten(theta))
    return torch.linalg.eigvalsh(hessian)


def small_mlp():
    model = MLP((1, 8, 8, 1), init="torch").double()
    return model, {k: v.detach() for k, v in P.get_params(model).items()}


def test_top_eigenvalue_matches_the_full_hessian():
    model, theta = small_mlp()
    tasks = sine_test_tasks(4, shots=5).to(dtype=torch.float64)
    got = sharpness.tasks_top_eigenvalue(model, theta, tasks, F.mse_loss, iterations=200)
    want = torch.stack([exact_top(model, theta, t.x_support, t.y_support, F.mse_loss)[-1] for t in tasks])
    assert torch.allclose(got, want, rtol=1e-4), (got, want)


def test_a_larger_negative_eigenvalue_is_not_mistaken_for_lambda_max():
    """Loss Σ cᵢ·predᵢ² of a linear model: Hessian 2·diag(c) with c = (−3, 0.5): μ = −6 dominates, λ_max = 1."""
    model = nn.Linear(2, 1, bias=False).double()
    theta = {k: v.detach() for k, v in P.get_params(model).items()}
    x = torch.eye(2, dtype=torch.float64)
    y = torch.tensor([[-3.0], [0.5]], dtype=torch.float64)
    loss = lambda pred, c: (c * pred ** 2).sum()  # noqa: E731
    assert exact_top(model, theta, x, y, loss).tolist() == pytest.approx([-6.0, 1.0])
    assert float(sharpness.top_eigenvalue(model, theta, x, y, loss)) == pytest.approx(1.0, rel=1e-6)


def test_along_fine_tuning_follows_plain_sgd():
    model, theta = small_mlp()
    tasks = sine_test_tasks(3, shots=5).to(dtype=torch.float64)
    sharp, query = sharpness.along_fine_tuning(model, theta, tasks, F.mse_loss, 0.05, 3, iterations=200)
    assert sharp.shape == query.shape == (3, 4)
    for i, t in enumerate(tasks):
        p = {k: v.clone().requires_grad_() for k, v in theta.items()}
        for step in range(4):
            top = exact_top(model, {k: v.detach() for k, v in p.items()}, t.x_support, t.y_support, F.mse_loss)[-1]
            assert float(sharp[i, step]) == pytest.approx(0.05 * float(top), rel=1e-4)
            assert float(query[i, step]) == pytest.approx(F.mse_loss(P.forward(model, p, t.x_query),
                                                                     t.y_query).item(), rel=1e-10)
            g = torch.autograd.grad(F.mse_loss(P.forward(model, p, t.x_support), t.y_support), list(p.values()))
            p = {k: (v - 0.05 * gk).detach().requires_grad_() for (k, v), gk in zip(p.items(), g)}
