"""MAML and First-Order MAML against closed forms, finite differences and oracles (float64)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mamlkit import maml
from mamlkit import params as P
from mamlkit.inner import InnerLoop
from mamlkit.models import MLP
from mamlkit.tasks import Task, sample_sine_tasks


def linear_data(device, n=7, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64).to(device)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64).to(device)
    return x, y


def augmented(x):
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1)


@pytest.mark.parametrize("first_order", [False, True])
def test_closed_form_meta_gradient_linear_mse(device, first_order):
    model = nn.Linear(3, 1).double().to(device)
    params = P.get_params(model)
    xs, ys = linear_data(device, seed=1)
    xq, yq = linear_data(device, n=5, seed=2)
    alpha = 0.1
    task = Task(xs, ys, xq, yq)
    meta_grad = torch.autograd.grad(maml.task_loss(model, params, task, F.mse_loss, alpha, 1, first_order),
                                    list(params.values()))
    # closed form with θ = [w, b], features A = [x, 1]:  L(θ) = |Aθ - y|² / n
    theta = torch.cat([params["weight"].reshape(-1), params["bias"]]).detach()
    a_s, a_q = augmented(xs), augmented(xq)
    hessian = 2 / len(xs) * a_s.T @ a_s
    grad_s = 2 / len(xs) * a_s.T @ (a_s @ theta - ys[:, 0])
    adapted = theta - alpha * grad_s
    grad_q = 2 / len(xq) * a_q.T @ (a_q @ adapted - yq[:, 0])
    eye = torch.eye(4, dtype=torch.float64, device=device)
    expected = grad_q if first_order else (eye - alpha * hessian) @ grad_q
    torch.testing.assert_close(torch.cat([g.reshape(-1) for g in meta_grad]), expected, rtol=1e-12, atol=1e-12)


def small_mlp(device):
    torch.manual_seed(0)
    return MLP((1, 8, 8, 1), init="torch").double().to(device)


def sine_batch(n, device, shots=6, queries=6, seed=0):
    return sample_sine_tasks(n, shots, queries, torch.Generator().manual_seed(seed), device, torch.float64)


def test_gradcheck_through_two_inner_steps(device):
    model = small_mlp(device)
    names = list(P.get_params(model))
    tasks = sine_batch(2, device)

    def loss(*values):
        return maml.maml_loss(model, dict(zip(names, values)), tasks, F.mse_loss, 0.05, inner_steps=2)

    values = tuple(v.detach().clone().requires_grad_() for v in P.get_params(model).values())
    assert torch.autograd.gradcheck(loss, values, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_inner_update_equals_sgd_on_a_copy(device):
    model = small_mlp(device)
    task = sine_batch(1, device)[0]
    adapted = maml.inner_update(model, P.get_params(model), task.x_support, task.y_support, F.mse_loss, 0.03)
    copy = small_mlp(device)
    sgd = torch.optim.SGD(copy.parameters(), lr=0.03)
    F.mse_loss(copy(task.x_support), task.y_support).backward()
    sgd.step()
    for name, p in copy.named_parameters():
        torch.testing.assert_close(adapted[name], p, rtol=1e-13, atol=1e-13)


def test_adapt_is_repeated_inner_update(device):
    model = small_mlp(device)
    task = sine_batch(1, device)[0]
    params = P.get_params(model)
    twice = maml.inner_update(model, maml.inner_update(model, params, task.x_support, task.y_support,
                                                       F.mse_loss, 0.02), task.x_support, task.y_support,
                              F.mse_loss, 0.02)
    adapted = maml.adapt(model, params, task.x_support, task.y_support, F.mse_loss, 0.02, inner_steps=2)
    for k in params:
        torch.testing.assert_close(adapted[k], twice[k])


@pytest.mark.parametrize("steps", [1, 3])
def test_first_order_is_query_gradient_at_detached_adapted_params(device, steps):
    model = small_mlp(device)
    params = P.get_params(model)
    task = sine_batch(1, device)[0]
    fo = torch.autograd.grad(maml.task_loss(model, params, task, F.mse_loss, 0.05, steps, first_order=True),
                             list(params.values()))
    adapted = P.detach(maml.adapt(model, params, task.x_support, task.y_support, F.mse_loss, 0.05, steps),
                       requires_grad=True)
    query = F.mse_loss(P.forward(model, adapted, task.x_query), task.y_query)
    expected = torch.autograd.grad(query, list(adapted.values()))
    for a, b in zip(fo, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def meta_grads(model, params, tasks, inner_lr, first_order=False):
    loss = maml.maml_loss(model, params, tasks, F.mse_loss, inner_lr, first_order=first_order)
    return torch.autograd.grad(loss, list(params.values()))


def test_second_order_differs_from_first_order_by_the_hessian_term(device):
    model = small_mlp(device)
    params = P.get_params(model)
    tasks = sine_batch(4, device)
    so, fo = meta_grads(model, params, tasks, 0.1), meta_grads(model, params, tasks, 0.1, first_order=True)
    diff = torch.cat([(a - b).reshape(-1) for a, b in zip(so, fo)]).norm()
    scale = torch.cat([a.reshape(-1) for a in so]).norm()
    assert diff > 1e-3 * scale
    # ...and the difference vanishes as α -> 0, where (I - αH) -> I
    so0, fo0 = meta_grads(model, params, tasks, 1e-9), meta_grads(model, params, tasks, 1e-9, first_order=True)
    for a, b in zip(so0, fo0):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_maml_loss_is_mean_of_task_losses(device):
    model = small_mlp(device)
    params = P.get_params(model)
    tasks = sine_batch(3, device)
    each = [maml.task_loss(model, params, t, F.mse_loss, 0.05, 1) for t in tasks]
    torch.testing.assert_close(maml.maml_loss(model, params, tasks, F.mse_loss, 0.05), sum(each) / 3)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("steps", [1, 2])
def test_batched_meta_gradient_equals_loop(device, first_order, steps):
    model = small_mlp(device)
    params = P.get_params(model)
    tasks = sine_batch(5, device)
    grads = []
    for batched in (False, True):
        loss = maml.maml_loss(model, params, tasks, F.mse_loss, 0.05, steps, first_order, batched=batched)
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)


def test_batchnorm_model_adapts_with_its_buffers(device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)).double().to(device)
    tasks = sine_batch(2, device)
    loss = maml.maml_loss(model, P.get_params(model), tasks, F.mse_loss, 0.05, 2)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ValueError, match="mamlkit.models.BatchNorm"):
        maml.maml_loss(model, P.get_params(model), tasks, F.mse_loss, 0.05, 1, batched=True)


@pytest.mark.parametrize("bad", [0, -0.1, float("nan")])
def test_inner_lr_must_be_positive(bad):
    model = MLP()
    with pytest.raises(ValueError, match="inner_lr"):
        maml.inner_update(model, P.get_params(model), torch.zeros(3, 1), torch.zeros(3, 1), F.mse_loss, bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_inner_steps_must_be_at_least_one(bad):
    model = MLP()
    with pytest.raises(ValueError, match="inner_steps"):
        maml.adapt(model, P.get_params(model), torch.zeros(3, 1), torch.zeros(3, 1), F.mse_loss, 0.01, bad)


@pytest.mark.parametrize("batched", [False, True])
def test_meta_backward_task_by_task_equals_the_mean_loss_gradient(device, batched):
    model = small_mlp(device)
    params = P.get_params(model)
    tasks = sine_batch(4, device)
    expected = torch.autograd.grad(maml.maml_loss(model, params, tasks, F.mse_loss, 0.05, 2), list(params.values()))
    loss = maml.meta_backward(model, params, tasks, F.mse_loss, InnerLoop.sgd(0.05, 2), maml.Execution(batched), 0.5)
    torch.testing.assert_close(loss, maml.maml_loss(model, params, tasks, F.mse_loss, 0.05, 2).detach())
    for p, g in zip(params.values(), expected):
        torch.testing.assert_close(p.grad, 0.5 * g, rtol=1e-10, atol=1e-12)
