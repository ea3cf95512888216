"""The batched (vmap) path equals the per-task loop — MLP and Conv4 with BatchNorm, second order,
through two inner steps, float64 — and matches finite differences. Fused normalisation kernels,
whose second-order gradients are wrong under vmap, are refused with a clear error."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mamlkit import maml, reptile
from mamlkit import params as P
from mamlkit.batched import adapt_batched
from mamlkit.inner import InnerLoop, by_name
from mamlkit.models import BatchNorm, Conv4
from mamlkit.tasks import Task


def conv_tasks(device, n=3, ways=3, shots=2, queries=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, ways * (shots + queries), 1, size, size, generator=g, dtype=torch.float64).to(device)
    y = torch.arange(ways).repeat_interleave(shots + queries).expand(n, -1).to(device)
    return Task(x[:, : ways * shots], y[:, : ways * shots], x[:, ways * shots:], y[:, ways * shots:])


def small_conv4(device, ways=3):
    torch.manual_seed(0)
    return Conv4(ways=ways, channels=4, image_size=8).double().to(device)


def loop(lr, steps, optimizer="sgd", batch=None):
    """The inner loop Reptile and evaluation run: first order, SGD or Adam (β1 = 0), optionally mini-batched."""
    return InnerLoop(by_name(optimizer, lr), steps, True, batch)


def flat_grad(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))])


@pytest.mark.parametrize("first_order", [False, True])
def test_conv4_batched_meta_gradient_equals_loop_two_steps(device, first_order):
    model, tasks = small_conv4(device), conv_tasks(device)
    params = P.get_params(model)
    grads = [flat_grad(maml.maml_loss(model, params, tasks, F.cross_entropy, 0.4, 2, first_order, batched=b), params)
             for b in (False, True)]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)
    assert grads[0].norm() > 1e-3


def test_conv4_batched_matches_finite_differences(device):
    model, tasks = small_conv4(device), conv_tasks(device, n=2)
    names = list(P.get_params(model))

    def loss(*values):
        return maml.maml_loss(model, dict(zip(names, values)), tasks, F.cross_entropy, 0.4, 2, batched=True)

    values = tuple(v.detach().clone().requires_grad_() for v in P.get_params(model).values())
    assert torch.autograd.gradcheck(loss, values, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)  # random projections


def test_conv4_batchnorm_weight_gets_the_second_order_term(device):
    """The case fused kernels get wrong: BatchNorm's weight adapted in the inner loop."""
    model, tasks = small_conv4(device), conv_tasks(device)
    params = P.get_params(model)
    so = torch.autograd.grad(maml.maml_loss(model, params, tasks, F.cross_entropy, 0.4, 2, batched=True),
                             [params["1.weight"]])[0]
    fo = torch.autograd.grad(maml.maml_loss(model, params, tasks, F.cross_entropy, 0.4, 2, True, batched=True),
                             [params["1.weight"]])[0]
    loop = torch.autograd.grad(maml.maml_loss(model, params, tasks, F.cross_entropy, 0.4, 2), [params["1.weight"]])[0]
    torch.testing.assert_close(so, loop, rtol=1e-10, atol=1e-12)
    assert (so - fo).norm() > 1e-4 * so.norm()


def test_our_batchnorm_equals_the_fused_kernel_outside_vmap():
    x = torch.randn(6, 5, 4, 4, dtype=torch.float64)
    ours = BatchNorm(5).double()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    fused = F.batch_norm(x, None, None, ours.weight, ours.bias, training=True, eps=ours.eps)
    torch.testing.assert_close(ours(x), fused)


@pytest.mark.parametrize("norm", [nn.BatchNorm2d(4), nn.BatchNorm2d(4, track_running_stats=False), nn.LayerNorm(4)])
def test_fused_norms_are_refused_by_the_batched_path(norm):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), norm, nn.Flatten(), nn.LazyLinear(3)).double()
    tasks = conv_tasks("cpu", size=4)
    model(tasks.x_support[0])  # materialise the lazy layer
    with pytest.raises(ValueError, match="mamlkit.models.BatchNorm"):
        maml.maml_loss(model, P.get_params(model), tasks, F.cross_entropy, 0.4, 1, batched=True)
    maml.maml_loss(model, P.get_params(model), tasks, F.cross_entropy, 0.4, 1).backward()  # the loop is fine


@pytest.mark.parametrize("inner_optimizer, inner_batch", [("sgd", None), ("adam", 2)])
def test_conv4_batched_reptile_equals_loop(device, inner_optimizer, inner_batch):
    model, tasks = small_conv4(device), conv_tasks(device, shots=3)
    if inner_batch:  # the Reptile code's mini-batches: 3 steps of 2 of the 9 support images
        tasks = reptile.minibatch_order(tasks, inner_batch, 3, torch.Generator().manual_seed(1))
    params = P.get_params(model)
    inner = loop(0.1 if inner_optimizer == "sgd" else 0.01, 3, inner_optimizer, inner_batch)
    in_loop = reptile.reptile_step(model, params, tasks, F.cross_entropy, inner, outer_lr=0.5)
    batched = reptile.reptile_step(model, params, tasks, F.cross_entropy, inner, outer_lr=0.5, batched=True)
    # a conv bias before BatchNorm has gradient 0 up to rounding, and Adam divides it by √v: ~1e-10 differences
    tol = dict(rtol=1e-10, atol=1e-12) if inner_optimizer == "sgd" else dict(rtol=1e-8, atol=1e-9)
    for k in in_loop:
        torch.testing.assert_close(batched[k], in_loop[k], **tol)
    assert P.norm(P.sub(batched, params)) > 1e-3


def test_batched_is_the_default_where_it_is_faster(device):
    from mamlkit.batched import prefer_batched
    from mamlkit.models import MLP

    assert prefer_batched(MLP().to(device))
    assert prefer_batched(Conv4().to(device)) == (device.type == "cuda")  # vmap'd convs are slower on the CPU
    assert not prefer_batched(nn.Sequential(nn.Linear(1, 4), nn.BatchNorm1d(4)).to(device))


def test_conv4_batched_reptile_with_kept_inner_state(device, monkeypatch):
    """Batched, every task starts from the kept Adam state and the state becomes the tasks' mean:
    each task's φ equals the loop's from a copy of the same state."""
    from mamlkit.inner import AdamState

    # The conv biases before BatchNorm have a gradient of exactly 0 up to rounding, which Adam scales up
    # to a step of ~lr: compare with the loop on the same plain ops, so that the rounding is the same.
    monkeypatch.setattr(BatchNorm, "forward", BatchNorm.plain)
    model = small_conv4(device)
    tasks = reptile.minibatch_order(conv_tasks(device, shots=3), 2, 3, torch.Generator().manual_seed(1))
    params = P.get_params(model)
    _, state = reptile.mean_adapted(model, params, tasks[:1], F.cross_entropy, loop(0.01, 2, "adam", 2),
                                    AdamState.zeros(params))
    assert state.step == 2 and state.exp_avg_sq["0.weight"].abs().sum() > 0  # a non-trivial state
    inner = loop(0.01, 3, "adam", 2)
    phis, batched_state = adapt_batched(model, F.cross_entropy, P.detach(params), tasks.x_support, tasks.y_support,
                                        inner, state)
    loop_states = []
    for i, task in enumerate(tasks):
        phi, end = inner.adapt(model, F.cross_entropy, params, task.x_support, task.y_support, state, graph=False)
        loop_states.append(end)
        for k in phi:
            torch.testing.assert_close(phis[k][i], phi[k], rtol=1e-8, atol=1e-9)
    assert batched_state.step == state.step + 3
    for k in state.exp_avg_sq:
        mean = torch.stack([s.exp_avg_sq[k] for s in loop_states]).mean(0)
        torch.testing.assert_close(batched_state.exp_avg_sq[k], mean, rtol=1e-8, atol=1e-20)


def test_non_transductive_scores_each_query_with_the_support_set(device):
    """Each query alone in a batch with the support set (BatchNorm statistics of those); the batched
    evaluation equals the loop; transductive and not differ only where batch statistics are used."""
    from mamlkit.evaluation import Protocol, evaluate, predict
    from mamlkit.models import MLP

    model, tasks = small_conv4(device), conv_tasks(device, shots=2, queries=3)
    params, task = P.get_params(model), tasks[0]
    alone = predict(model, params, task.x_support, task.x_query, transductive=False)
    for j, q in enumerate(task.x_query):
        torch.testing.assert_close(alone[j], model(torch.cat([task.x_support, q[None]]))[-1], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(alone, predict(model, params, task.x_support, task.x_query), atol=1e-6)
    protocol = Protocol.sgd(0.1, 2, transductive=False)
    in_loop = evaluate(model, params, tasks, F.cross_entropy, protocol, "accuracy", batched=False)
    batched = evaluate(model, params, tasks, F.cross_entropy, protocol, "accuracy", batched=True)
    torch.testing.assert_close(batched.per_task, in_loop.per_task)
    mlp = MLP().double().to(device)
    x = torch.rand(7, 1, dtype=torch.float64, device=device)
    torch.testing.assert_close(predict(mlp, P.get_params(mlp), x[:3], x[3:], False), mlp(x[3:]))


def _sine_batch(n=4, seed=3):
    from mamlkit.tasks import sample_sine_tasks

    return sample_sine_tasks(n, 6, 5, torch.Generator().manual_seed(seed), "cpu", torch.float64)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("lr", ["scalar", "per-element"])
def test_stacked_mlp_path_equals_the_loop_without_vmap(monkeypatch, first_order, steps, lr):
    """``models.MLP`` (``stacked = True``) runs the meta-batch on stacked parameters, no ``vmap`` (patched to
    fail): its meta-gradient equals the per-task loop's (float64, second order through 3 steps, a scalar α and
    Meta-SGD's α per element); a model without ``stacked`` still takes ``vmap`` and equals the loop too."""
    import mamlkit.batched as B
    from mamlkit.models import MLP

    torch.manual_seed(0)
    tasks = _sine_batch()
    for model in (MLP((1, 8, 8, 1), init="torch").double(),
                  nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()):
        params = P.get_params(model)
        alpha = 0.05 if lr == "scalar" else {k: 0.02 + 0.05 * torch.rand_like(v) for k, v in params.items()}
        inner = InnerLoop.sgd(alpha, steps, first_order)
        adapted = [inner.adapt(model, F.mse_loss, params, t.x_support, t.y_support)[0] for t in tasks]
        expected = flat_grad(sum(F.mse_loss(P.forward(model, a, t.x_query), t.y_query) for a, t in zip(adapted, tasks))
                             / len(tasks), params)
        with monkeypatch.context() as m:
            if getattr(model, "stacked", False):
                m.setattr(B, "vmap", None)  # the stacked path must not need it
            losses = B.batched_task_losses(model, params, tasks, F.mse_loss, inner)
        assert losses.shape == (len(tasks),)
        torch.testing.assert_close(flat_grad(losses.mean(), params), expected, rtol=1e-10, atol=1e-12)


def test_stacked_task_losses_equal_one_loss_per_task():
    """``inner.task_losses`` (one unreduced call for MSE and cross-entropy) equals the loss of each task."""
    from mamlkit.inner import task_losses

    g = torch.Generator().manual_seed(0)
    pred, y = torch.randn(3, 7, 2, generator=g, dtype=torch.float64), torch.randn(3, 7, 2, generator=g,
                                                                               dtype=torch.float64)
    labels = torch.randint(0, 2, (3, 7), generator=g)
    huber = F.smooth_l1_loss
    for loss_fn, target in ((F.mse_loss, y), (F.cross_entropy, labels), (huber, y)):
        expected = torch.stack([loss_fn(p, t) for p, t in zip(pred, target)])
        torch.testing.assert_close(task_losses(loss_fn, pred, target), expected, rtol=1e-12, atol=1e-14)


def test_stacked_linear_equals_each_task_s_linear():
    from mamlkit.models import Linear

    layer, g = Linear(3, 2).double(), torch.Generator().manual_seed(1)
    w, b = torch.randn(4, 2, 3, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    x = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    out = torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))
    torch.testing.assert_close(out, torch.stack([F.linear(x[i], w[i], b[i]) for i in range(4)]))
