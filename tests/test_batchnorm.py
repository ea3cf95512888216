"""mamlkit's BatchNorm takes the fused kernel in the per-task loop and plain ops under vmap; both give
the loop's second-order meta-gradient (float64, finite differences, the plain-op loop as the oracle)."""

import pytest
import torch
import torch.nn.functional as F

from mamlkit import maml
from mamlkit import params as P
from mamlkit.models import BatchNorm, Conv4
from mamlkit.tasks import Task


def conv_tasks(n=3, ways=3, shots=2, queries=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, ways * (shots + queries), 1, size, size, generator=g, dtype=torch.float64)
    y = torch.arange(ways).repeat_interleave(shots + queries).expand(n, -1)
    return Task(x[:, : ways * shots], y[:, : ways * shots], x[:, ways * shots:], y[:, ways * shots:])


def small_conv4():
    torch.manual_seed(0)
    model = Conv4(ways=3, channels=4, image_size=8).double()
    with torch.no_grad():  # BatchNorm weights away from 1, biases away from 0: every term of the Hessian counts
        for m in model.modules():
            if isinstance(m, BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


def meta_grad(model, tasks, batched, first_order=False, steps=2):
    params = P.get_params(model)
    loss = maml.maml_loss(model, params, tasks, F.cross_entropy, 0.4, steps, first_order, batched=batched)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))])


@pytest.fixture
def fused_calls(monkeypatch):
    calls = []
    fused = F.batch_norm

    def spy(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(F, "batch_norm", spy)
    return calls


def test_loop_uses_the_fused_kernel_and_vmap_the_plain_ops(fused_calls):
    model, tasks = small_conv4(), conv_tasks()
    meta_grad(model, tasks, batched=False)
    # 3 tasks × (2 inner steps + query) forward passes × 4 BatchNorms
    assert len(fused_calls) == 3 * 3 * 4
    fused_calls.clear()
    meta_grad(model, tasks, batched=True)
    assert fused_calls == []


@pytest.mark.parametrize("first_order", [False, True])
def test_fused_loop_plain_loop_and_batched_give_one_meta_gradient(monkeypatch, first_order):
    model, tasks = small_conv4(), conv_tasks()
    fused = meta_grad(model, tasks, batched=False, first_order=first_order)
    batched = meta_grad(model, tasks, batched=True, first_order=first_order)
    monkeypatch.setattr(BatchNorm, "forward", BatchNorm.plain)  # the oracle: plain ops in the loop
    plain = meta_grad(model, tasks, batched=False, first_order=first_order)
    torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(batched, plain, rtol=1e-10, atol=1e-12)
    assert plain.norm() > 1e-3


def test_fused_loop_meta_gradient_matches_finite_differences():
    model, tasks = small_conv4(), conv_tasks(n=2)
    names = list(P.get_params(model))

    def loss(*values):
        return maml.maml_loss(model, dict(zip(names, values)), tasks, F.cross_entropy, 0.4, 2)

    values = tuple(v.detach().clone().requires_grad_() for v in P.get_params(model).values())
    assert torch.autograd.gradcheck(loss, values, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)  # random projections


def test_fused_and_plain_forward_agree():
    x = torch.randn(6, 5, 4, 4, dtype=torch.float64)
    norm = BatchNorm(5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    torch.testing.assert_close(norm(x), norm.plain(x), rtol=1e-12, atol=1e-12)
