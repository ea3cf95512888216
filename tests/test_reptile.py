"""Reptile identities: ε = 0, one task with ε = 1, and k = 1 as joint training (Nichol et al. 2018)."""

import pytest
import torch
import torch.nn.functional as F
from test_batched import loop

from mamlkit import maml, reptile
from mamlkit import params as P
from mamlkit.inner import AdamState
from mamlkit.models import MLP
from mamlkit.tasks import sample_sine_tasks


def setup(device, n=3, seed=0):
    torch.manual_seed(seed)
    model = MLP((1, 8, 8, 1), init="torch").double().to(device)
    tasks = sample_sine_tasks(n, 6, 6, torch.Generator().manual_seed(seed), device, torch.float64)
    return model, P.get_params(model), tasks


def close(a, b, **kw):
    for k in a:
        torch.testing.assert_close(a[k], b[k], **kw)


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_zero_outer_lr_changes_nothing(device, inner_optimizer):
    model, params, tasks = setup(device)
    new = reptile.reptile_step(model, params, tasks, F.mse_loss, loop(0.05, 3, inner_optimizer), outer_lr=0.0)
    close(new, params, rtol=0, atol=0)


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_one_task_with_outer_lr_one_lands_on_phi(device, inner_optimizer):
    model, params, tasks = setup(device, n=1)
    phi, _ = reptile.adapt_task(model, params, tasks[0], F.mse_loss, loop(0.05, 3, inner_optimizer))
    new = reptile.reptile_step(model, params, tasks, F.mse_loss, loop(0.05, 3, inner_optimizer), outer_lr=1.0)
    close(new, phi, rtol=1e-14, atol=1e-14)
    assert P.norm(P.sub(phi, params)) > 1e-3  # φ really moved


def test_one_inner_step_is_joint_training(device):
    """k = 1: θ + ε(mean φ − θ) = θ − εα ∇ mean_i L_i(θ), an SGD step on the joint loss."""
    model, params, tasks = setup(device, n=4)
    alpha, eps = 0.05, 0.7
    new = reptile.reptile_step(model, params, tasks, F.mse_loss, alpha, 1, eps)
    joint = torch.stack([F.mse_loss(P.forward(model, params, t.x_support), t.y_support) for t in tasks]).mean()
    grads = torch.autograd.grad(joint, list(params.values()))
    expected = {k: v - eps * alpha * g for (k, v), g in zip(params.items(), grads)}
    close(new, expected, rtol=1e-12, atol=1e-12)


def test_more_inner_steps_is_not_joint_training(device):
    """k > 1 adds higher-order terms: the step is no longer k SGD steps on the joint loss."""
    model, params, tasks = setup(device, n=4)
    alpha, k = 0.1, 5
    new = reptile.reptile_step(model, params, tasks, F.mse_loss, alpha, k, 1.0)
    joint = P.detach(params, requires_grad=True)
    for _ in range(k):
        loss = torch.stack([F.mse_loss(P.forward(model, joint, t.x_support), t.y_support) for t in tasks]).mean()
        joint = P.detach({n: v - alpha * g for (n, v), g in
                          zip(joint.items(), torch.autograd.grad(loss, list(joint.values())))}, True)
    gap = P.norm(P.sub(new, joint))
    assert gap > 1e-4 * P.norm(P.sub(new, params))


def test_batched_reptile_equals_loop(device):
    model, params, tasks = setup(device, n=5)
    loop = reptile.reptile_step(model, params, tasks, F.mse_loss, 0.05, 3, 0.5, batched=False)
    batched = reptile.reptile_step(model, params, tasks, F.mse_loss, 0.05, 3, 0.5, batched=True)
    close(batched, loop, rtol=1e-10, atol=1e-12)


def test_adam_inner_loop_matches_torch_adam(device):
    model, params, tasks = setup(device, n=1)
    phi, _ = reptile.adapt_task(model, params, tasks[0], F.mse_loss, loop(0.01, 4, "adam"))
    copy = MLP((1, 8, 8, 1), init="torch").double().to(device)
    copy.load_state_dict({k: v.detach() for k, v in params.items()})
    opt = torch.optim.Adam(copy.parameters(), lr=0.01, betas=(0.0, 0.999))
    for _ in range(4):
        opt.zero_grad()
        F.mse_loss(copy(tasks[0].x_support), tasks[0].y_support).backward()
        opt.step()
    close(phi, dict(copy.named_parameters()), rtol=1e-12, atol=1e-12)


def test_reptile_does_not_touch_the_input_params(device):
    model, params, tasks = setup(device)
    before = P.detach(params)
    reptile.reptile_step(model, params, tasks, F.mse_loss, 0.05, 3, 1.0)
    close(params, before, rtol=0, atol=0)


def test_bad_reptile_input():
    model, params, tasks = setup("cpu")
    with pytest.raises(ValueError, match="inner optimizer"):
        reptile.reptile_step(model, params, tasks, F.mse_loss, loop(0.05, 1, "rmsprop"), outer_lr=1.0)
    with pytest.raises(ValueError, match="outer_lr"):
        reptile.reptile_step(model, params, tasks, F.mse_loss, 0.05, 1, -1.0)
    with pytest.raises(ValueError, match="inner_steps"):
        reptile.reptile_step(model, params, tasks, F.mse_loss, 0.05, 0, 1.0)
    with pytest.raises(ValueError, match="inner_lr"):
        maml.adapt(model, params, tasks.x_support[0], tasks.y_support[0], F.mse_loss, 0.0)


def test_batched_adam_inner_loop_equals_the_loop(device):
    """Reptile's Adam inner loop under vmap equals torch.optim.Adam task by task."""
    model, params, tasks = setup(device, n=4)
    adam = loop(0.01, 4, "adam")
    in_loop = reptile.reptile_step(model, params, tasks, F.mse_loss, adam, outer_lr=0.7, batched=False)
    batched = reptile.reptile_step(model, params, tasks, F.mse_loss, adam, outer_lr=0.7, batched=True)
    close(batched, in_loop, rtol=1e-10, atol=1e-12)
    assert P.norm(P.sub(batched, params)) > 1e-3


def test_minibatch_order_uses_every_example_once_before_reusing_any(device):
    _, _, tasks = setup(device, n=4)  # 6 support points per task
    ordered = reptile.minibatch_order(tasks, 4, 3, torch.Generator().manual_seed(0))  # 12 = two rounds of 6
    assert ordered.x_support.shape == (4, 12, 1)
    for t in range(4):
        for block in (ordered.x_support[t, :6], ordered.x_support[t, 6:]):
            assert sorted(block.flatten().tolist()) == sorted(tasks.x_support[t].flatten().tolist())
        pairs = dict(zip(tasks.x_support[t].flatten().tolist(), tasks.y_support[t].flatten().tolist()))
        assert [pairs[x] for x in ordered.x_support[t].flatten().tolist()] == ordered.y_support[t].flatten().tolist()
    again = reptile.minibatch_order(tasks, 4, 3, torch.Generator().manual_seed(0))
    assert torch.equal(again.x_support, ordered.x_support)
    assert not torch.equal(ordered.x_support[0], ordered.x_support[1])  # each task shuffled on its own
    with pytest.raises(ValueError, match="inner_batch must be between 1 and the 6"):
        reptile.minibatch_order(tasks, 7, 3, torch.Generator())


def test_inner_batch_steps_on_consecutive_blocks(device):
    model, params, tasks = setup(device, n=1)
    task = tasks[0]
    phi, _ = reptile.adapt_task(model, params, task, F.mse_loss, loop(0.05, 3, batch=2))
    expected = params
    for s in range(3):
        x, y = task.x_support[2 * s: 2 * s + 2], task.y_support[2 * s: 2 * s + 2]
        expected = P.detach(maml.inner_update(model, P.detach(expected, requires_grad=True), x, y, F.mse_loss, 0.05))
    close(phi, expected, rtol=1e-12, atol=1e-12)
    full, _ = reptile.adapt_task(model, params, task, F.mse_loss, loop(0.05, 3))
    assert not torch.allclose(full["0.weight"], phi["0.weight"])


def test_inner_batch_is_for_reptile_only():
    from mamlkit.config import Config

    assert Config(task="omniglot", algo="reptile").resolved().inner_batch == 10
    assert Config(algo="reptile").resolved().inner_batch is None
    with pytest.raises(ValueError, match="for --algo reptile only"):
        Config(algo="maml", inner_batch=5).resolved()


def reptile_code_reference(model, tasks_per_iteration, lr, steps, inner_batch, eps):
    """The Reptile code's loop (openai/supervised-reptile ``Reptile.train_step``) in plain PyTorch: one
    Adam (β1 = 0) over the model's weights for the whole run; only the weights are reset per task."""
    weights = list(model.parameters())
    optimizer = torch.optim.Adam(weights, lr=lr, betas=(0.0, 0.999))
    for tasks in tasks_per_iteration:
        old = [w.detach().clone() for w in weights]
        mean = [torch.zeros_like(w) for w in weights]
        for task in tasks:
            for s in range(steps):
                xs = task.x_support[s * inner_batch: (s + 1) * inner_batch]
                ys = task.y_support[s * inner_batch: (s + 1) * inner_batch]
                optimizer.zero_grad()
                F.cross_entropy(model(xs), ys).backward()
                optimizer.step()
            with torch.no_grad():
                for m, w, o in zip(mean, weights, old):
                    m += w / len(tasks)
                    w.copy_(o)
        with torch.no_grad():
            for w, o, m in zip(weights, old, mean):
                w.copy_(o + eps * (m - o))
    return {k: v.detach().clone() for k, v in model.named_parameters()}, optimizer


def test_kept_inner_adam_state_is_the_reptile_code(device):
    """``inner_state`` carries Adam's moments and step count from task to task and from one outer step
    to the next, exactly as the Reptile code; a fresh Adam per task gives a different result."""
    from test_batched import conv_tasks, small_conv4

    g = torch.Generator().manual_seed(3)
    iterations = [reptile.minibatch_order(conv_tasks(device, n=3, shots=4, seed=i), 3, 3, g) for i in range(2)]
    model = small_conv4(device)
    params = P.get_params(model)
    start = P.detach(params)
    state = AdamState.zeros(params)
    theta = start
    for tasks in iterations:  # what training does with a kept state: mean φ, then θ + ε (mean φ − θ)
        mean_phi, state = reptile.mean_adapted(model, theta, tasks, F.cross_entropy, loop(0.01, 3, "adam", 3), state)
        theta = P.lerp(theta, mean_phi, 0.5)
    fresh = start
    for tasks in iterations:
        fresh = reptile.reptile_step(model, fresh, tasks, F.cross_entropy, loop(0.01, 3, "adam", 3), outer_lr=0.5)
    reptile.apply_params(params, start)
    expected, optimizer = reptile_code_reference(model, iterations, 0.01, 3, 3, 0.5)
    # a conv bias before BatchNorm has gradient 0 up to rounding, and Adam divides it by √v: ~1e-10 differences
    close(theta, expected, rtol=1e-8, atol=1e-9)
    assert state.step == 2 * 3 * 3
    for k, p in model.named_parameters():
        torch.testing.assert_close(state.exp_avg_sq[k], optimizer.state[p]["exp_avg_sq"], rtol=1e-8, atol=1e-20)
    assert P.norm(P.sub(fresh, expected)) > 1e-3  # the kept state matters (and this test can tell)


def test_inner_state_needs_adam():
    from mamlkit.config import Config

    model, params, tasks = setup("cpu")
    with pytest.raises(ValueError, match="inner_optimizer='adam'"):
        reptile.mean_adapted(model, params, tasks, F.mse_loss, loop(0.01, 2, "sgd"), AdamState.zeros(params))
    with pytest.raises(ValueError, match="keep_inner_state"):
        Config(algo="reptile", keep_inner_state=True).resolved()  # sine Reptile's inner loop is SGD
    assert Config(task="omniglot", algo="reptile").resolved().keep_inner_state
    assert not Config(task="omniglot", algo="maml").resolved().keep_inner_state
