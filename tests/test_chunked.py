"""The batched path in chunks sized to a memory budget gives the unchunked meta-gradient (float64,
second order; the per-task loop as the oracle), and keeps less graph alive."""

import pytest
import torch
import torch.nn.functional as F

from mamlkit import batched, maml
from mamlkit import params as P
from mamlkit.config import Config
from mamlkit.inner import InnerLoop
from mamlkit.models import MLP, Conv4
from mamlkit.tasks import Task, sample_sine_tasks


def meta_grad(model, tasks, loss_fn, inner, scale=1.0, **execution):
    params = P.get_params(model)
    for p in params.values():
        p.grad = None
    loss = maml.meta_backward(model, params, tasks, loss_fn, inner, maml.Execution(**execution), scale)
    return loss, torch.cat([p.grad.reshape(-1) for p in params.values()])


def conv_tasks(n=5):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 12, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.arange(3).repeat_interleave(4).expand(n, -1)
    return Task(x[:, :6], y[:, :6], x[:, 6:], y[:, 6:])


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("max_memory", [1e-6, 0.02, 1e6])
def test_chunked_equals_unchunked_and_the_loop(first_order, max_memory):
    torch.manual_seed(0)
    model, tasks = MLP().double(), sample_sine_tasks(7, 5, 5, torch.Generator().manual_seed(0), dtype=torch.float64)
    inner = InnerLoop.sgd(0.3, 2, first_order)
    loss_all, whole = meta_grad(model, tasks, F.mse_loss, inner, batched=True, scale=0.5)
    loss_chunks, chunked = meta_grad(model, tasks, F.mse_loss, inner, batched=True, scale=0.5, max_memory=max_memory)
    loss_loop, loop = meta_grad(model, tasks, F.mse_loss, inner, scale=0.5)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(chunked, loop, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(loss_chunks, loss_all, rtol=1e-12, atol=0)
    assert whole.norm() > 1e-3


def test_conv4_chunked_equals_loop_second_order():
    torch.manual_seed(0)
    model, tasks = Conv4(3, channels=4, image_size=8).double(), conv_tasks()
    inner = InnerLoop.sgd(0.4, 2)
    _, chunked = meta_grad(model, tasks, F.cross_entropy, inner, batched=True, max_memory=1e-6)
    _, loop = meta_grad(model, tasks, F.cross_entropy, inner)
    torch.testing.assert_close(chunked, loop, rtol=1e-10, atol=1e-12)


def test_chunks_follow_the_budget(monkeypatch):
    """A budget of about two tasks' graph runs the first task alone, then chunks of two; no budget, one chunk."""
    sizes = []
    original = batched.batched_task_losses

    def spy(model, params, tasks, loss_fn, loop):
        sizes.append(len(tasks))
        return original(model, params, tasks, loss_fn, loop)

    monkeypatch.setattr(batched, "batched_task_losses", spy)
    torch.manual_seed(0)
    model, tasks = MLP(), sample_sine_tasks(7, 10, 10, torch.Generator().manual_seed(0))
    inner = InnerLoop.sgd(0.01, 1)
    one = batched.saved_bytes(original(model, P.get_params(model), tasks[:1], F.mse_loss, inner).sum())
    assert one > 1000
    meta_grad(model, tasks, F.mse_loss, inner, batched=True, max_memory=2.5 * one / 2**20)
    assert sizes == [1, 2, 2, 2]
    sizes.clear()
    meta_grad(model, tasks, F.mse_loss, inner, batched=True)
    assert sizes == [7]


@pytest.mark.parametrize("bad", [0, -1.0, True, "10"])
def test_bad_budget_is_one_clear_line(bad):
    model, tasks = MLP(), sample_sine_tasks(2, 5, 5)
    with pytest.raises(ValueError, match="max_memory must be a number of megabytes > 0"):
        meta_grad(model, tasks, F.mse_loss, InnerLoop.sgd(0.01), batched=True, max_memory=bad)
    if not isinstance(bad, str):
        with pytest.raises(ValueError, match="max_memory must be a number of megabytes > 0"):
            Config(max_memory=bad).resolved()


@pytest.mark.parametrize("algo", ["reptile", "metasgd", "imaml"])
def test_a_budget_for_an_algorithm_that_ignores_it_is_refused(algo):
    with pytest.raises(ValueError, match=f"algo '{algo}' does not use it: drop --max-memory"):
        Config(algo=algo, max_memory=10.0).resolved()


def test_training_with_a_budget_equals_without_and_resumes_with_another(tmp_path):
    """meta_train's batched path with --max-memory: the same parameters; the budget may change on resume."""
    from mamlkit.training import meta_train

    base = dict(task="sinusoid", iterations=4, meta_batch_size=5, batched=True, val_every=4, val_tasks=2,
                checkpoint_every=2)
    whole = meta_train(Config(**base), progress=False)
    chunked = meta_train(Config(**base, max_memory=1e-4), tmp_path / "run.pt", progress=False)
    for (k, a), b in zip(whole.model.state_dict().items(), chunked.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=k)
    resumed = meta_train(Config(**{**base, "iterations": 6}, max_memory=5.0), tmp_path / "run.pt", resume=True,
                         progress=False)
    assert resumed.iteration == 6 and resumed.config.max_memory == 5.0
