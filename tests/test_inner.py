"""The one inner loop: its optimizers equal torch.optim's on a copy (in the loop and under vmap),
second order through an Adam step matches finite differences, explicit batches and complete
parameter dicts are enforced, and ANIL's partial dict works on purpose."""

import pytest
import torch
import torch.nn.functional as F

from mamlkit import inner, maml, reptile
from mamlkit import params as P
from mamlkit.evaluation import Protocol, evaluate
from mamlkit.models import MLP
from mamlkit.tasks import sample_sine_tasks


def setup(n=3, seed=0):
    torch.manual_seed(seed)
    model = MLP((1, 8, 8, 1), init="torch").double()
    tasks = sample_sine_tasks(n, 6, 6, torch.Generator().manual_seed(seed), dtype=torch.float64)
    return model, P.get_params(model), tasks


def torch_optimizer_path(model, params, x, y, make, steps):
    """Parameters after each step of a torch.optim optimizer on a copy of the model."""
    copy = MLP((1, 8, 8, 1), init="torch").double()
    copy.load_state_dict({k: v.detach() for k, v in params.items()})
    opt = make(copy.parameters())
    path = []
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(copy(x), y).backward()
        opt.step()
        path.append({k: v.detach().clone() for k, v in copy.named_parameters()})
    return path


@pytest.mark.parametrize("name, make", [
    ("sgd", lambda ps: torch.optim.SGD(ps, lr=0.05)),
    ("adam", lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.0, 0.999))),
])
def test_inner_optimizers_equal_torch_optim_in_the_loop_and_under_vmap(name, make):
    model, params, tasks = setup()
    loop = inner.InnerLoop(inner.by_name(name, 0.05 if name == "sgd" else 0.01), 4, first_order=True)
    expected = [torch_optimizer_path(model, params, t.x_support, t.y_support, make, 4) for t in tasks]
    for i, task in enumerate(tasks):
        path, _ = loop.trajectory(model, F.mse_loss, params, task.x_support, task.y_support, graph=False)
        assert len(path) == 5
        for k in params:
            torch.testing.assert_close(path[4][k], expected[i][3][k], rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(path[1][k], expected[i][0][k], rtol=1e-12, atol=1e-14)
    theta = P.detach(params)
    under_vmap = torch.func.vmap(lambda xs, ys: loop.adapt(model, F.mse_loss, theta, xs, ys)[0])
    phis = under_vmap(tasks.x_support, tasks.y_support)
    for i in range(len(tasks)):
        for k in params:
            torch.testing.assert_close(phis[k][i], expected[i][3][k], rtol=1e-10, atol=1e-12)


def test_adam_state_continues_as_torch_adam():
    """Two calls of 2 steps from the kept state equal 4 steps of one torch.optim.Adam."""
    model, params, tasks = setup(n=1)
    task, adam = tasks[0], inner.adam(0.01)
    loop = inner.InnerLoop(adam, 2, first_order=True)
    phi, state = loop.adapt(model, F.mse_loss, params, task.x_support, task.y_support, graph=False)
    phi, state = loop.adapt(model, F.mse_loss, phi, task.x_support, task.y_support, state, graph=False)
    assert state.step == 4
    expected = torch_optimizer_path(model, params, task.x_support, task.y_support,
                                    lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.0, 0.999)), 4)[-1]
    for k in params:
        torch.testing.assert_close(phi[k], expected[k], rtol=1e-12, atol=1e-14)


def test_second_order_through_adam_matches_finite_differences():
    """The meta-gradient through two differentiable Adam steps (β1 = 0.9), float64 gradcheck."""
    model, params, tasks = setup(n=2)
    loop = inner.InnerLoop(inner.adam(0.01, betas=(0.9, 0.999)), 2)
    names = list(params)

    def meta_loss(*values):
        theta = dict(zip(names, values))
        losses = []
        for t in tasks:
            phi, _ = loop.adapt(model, F.mse_loss, theta, t.x_support, t.y_support)
            losses.append(F.mse_loss(P.forward(model, phi, t.x_query), t.y_query))
        return torch.stack(losses).mean()

    values = tuple(v.detach().clone().requires_grad_() for v in params.values())
    assert torch.autograd.gradcheck(meta_loss, values, eps=1e-6, atol=1e-6, rtol=1e-4)
    so = torch.autograd.grad(meta_loss(*values), values)
    loop = inner.InnerLoop(inner.adam(0.01, betas=(0.9, 0.999)), 2, first_order=True)
    fo = torch.autograd.grad(meta_loss(*values), values)
    assert max(float((a - b).abs().max()) for a, b in zip(so, fo)) > 1e-6  # the second-order term is there


def test_per_parameter_step_sizes():
    """``sgd(lr)`` with a tensor per parameter: each parameter moves by its own α (Meta-SGD), and the
    step is differentiable with respect to α."""
    model, params, tasks = setup(n=1)
    task = tasks[0]
    alpha = {k: torch.full_like(v, 0.05, requires_grad=True) for k, v in params.items()}
    loop = inner.InnerLoop(inner.sgd(alpha), 1)
    phi, _ = loop.adapt(model, F.mse_loss, params, task.x_support, task.y_support)
    scalar = maml.adapt(model, params, task.x_support, task.y_support, F.mse_loss, 0.05)
    for k in params:
        torch.testing.assert_close(phi[k], scalar[k], rtol=1e-12, atol=1e-14)
    loss = F.mse_loss(P.forward(model, phi, task.x_query), task.y_query)
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(loss, list(alpha.values())))


def test_a_single_task_is_refused_where_a_batch_is_expected():
    model, params, tasks = setup(n=2)
    one = tasks[0]
    with pytest.raises(ValueError, match="maml_loss takes a batch of tasks, got a single task"):
        maml.maml_loss(model, params, one, F.mse_loss, 0.01)
    with pytest.raises(ValueError, match="evaluate takes a batch of tasks"):
        evaluate(model, params, one, F.mse_loss, Protocol.sgd(0.01, 1))
    with pytest.raises(ValueError, match="mean_adapted takes a batch of tasks"):
        reptile.reptile_step(model, params, one, F.mse_loss, 0.01, 1, 1.0)
    with pytest.raises(TypeError, match="as_batch"):
        len(one)
    batch = one.as_batch()  # explicitly a batch of one
    assert len(batch) == 1
    torch.testing.assert_close(maml.maml_loss(model, params, batch, F.mse_loss, 0.01),
                               maml.maml_loss(model, params, tasks[:1], F.mse_loss, 0.01))


def test_a_parameter_dict_must_name_every_trainable_parameter():
    model, params, tasks = setup(n=2)
    partial = {k: v for k, v in params.items() if k != "0.weight"}
    with pytest.raises(ValueError, match="has no 0.weight"):
        maml.maml_loss(model, partial, tasks, F.mse_loss, 0.01)
    with pytest.raises(ValueError, match="has no 0.weight"):
        maml.maml_loss(model, partial, tasks, F.mse_loss, 0.01, batched=True)
    with pytest.raises(ValueError, match="allow_partial"):
        P.forward(model, partial, tasks.x_query[0])


@pytest.mark.parametrize("batched", [False, True])
def test_anil_adapts_only_the_head_on_purpose(batched):
    """ANIL: a dict of the head's parameters, the model marked ``allow_partial``. The inner loop leaves
    the body untouched; the body's meta-gradient arrives in the module's ``.grad``; and with a body that
    is the identity it equals MAML on the head alone."""
    model, _, tasks = setup(n=3)
    P.allow_partial(model)
    head = {k: v for k, v in model.named_parameters() if k.startswith("4.")}
    body_before = {k: v.detach().clone() for k, v in model.named_parameters() if not k.startswith("4.")}
    loss = maml.maml_loss(model, head, tasks, F.mse_loss, 0.05, 2, batched=batched)
    loss.backward()
    for k, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, k  # head and body both get a meta-gradient
        if k in body_before:
            assert torch.equal(p.detach(), body_before[k])
    phi = maml.adapt(model, head, tasks.x_support[0], tasks.y_support[0], F.mse_loss, 0.05, 2)
    assert set(phi) == set(head)
    # identity body: MLP 1-1 whose first two layers are fixed identities (weight 1, bias 0, inputs >= 0)
    torch.manual_seed(1)
    anil = P.allow_partial(MLP((1, 1, 1, 1), init="torch").double())
    only_head = MLP((1, 1), init="torch").double()
    with torch.no_grad():
        for i in (0, 2):
            anil[i].weight.fill_(1.0)
            anil[i].bias.zero_()
        anil[4].load_state_dict(only_head[0].state_dict())
    pos = sample_sine_tasks(2, 5, 5, torch.Generator().manual_seed(2), dtype=torch.float64)
    pos = type(pos)(pos.x_support.abs(), pos.y_support, pos.x_query.abs(), pos.y_query)  # ReLU is the identity
    a = maml.maml_loss(anil, {k: v for k, v in anil.named_parameters() if k.startswith("4.")}, pos, F.mse_loss, 0.1, 2)
    b = maml.maml_loss(only_head, P.get_params(only_head), pos, F.mse_loss, 0.1, 2)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_bad_inner_loop_settings():
    with pytest.raises(ValueError, match="unknown inner optimizer 'rmsprop'"):
        inner.by_name("rmsprop", 0.1)
    with pytest.raises(ValueError, match="inner_lr"):
        inner.InnerLoop.sgd(0.0)
    with pytest.raises(ValueError, match="inner_steps"):
        inner.InnerLoop.sgd(0.1, -1)
    model, params, tasks = setup(n=1)
    with pytest.raises(ValueError, match="SGD keeps no state"):
        inner.InnerLoop.sgd(0.1).adapt(model, F.mse_loss, params, tasks.x_support[0], tasks.y_support[0],
                                       inner.AdamState.zeros(params))
