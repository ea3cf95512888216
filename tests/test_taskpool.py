"""Tasks of a meta-batch in parallel on the CPU (``--workers``): the same gradient as the sequential loop."""

import pytest
import torch

from mamlkit import maml, taskpool, training
from mamlkit import params as P
from mamlkit.__main__ import main
from mamlkit.config import Config
from mamlkit.inner import InnerLoop
from mamlkit.models import MLP, Conv4
from mamlkit.tasks import Task, sample_sine_tasks

CE = torch.nn.functional.cross_entropy


def image_tasks(n=5, ways=5, queries=3, seed=0) -> Task:
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(n, ways, 1, 28, 28, generator=g, dtype=torch.float64)
    xq = torch.rand(n, ways * queries, 1, 28, 28, generator=g, dtype=torch.float64)
    ys = torch.arange(ways).expand(n, ways)
    yq = torch.arange(ways).repeat(queries).expand(n, ways * queries)
    return Task(xs, ys, xq, yq)


def gradients(model, params, tasks, loss_fn, inner, workers, start=None):
    for p in model.parameters():
        p.grad = None if start is None else torch.full_like(p, start)
    loss = maml.meta_backward(model, params, tasks, loss_fn, inner, maml.Execution(workers=workers), 0.5)
    return loss, [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def assert_equal_grads(a, b):
    assert torch.allclose(a[0], b[0], rtol=1e-12, atol=0)
    for x, y in zip(a[1], b[1]):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.allclose(x, y, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_tasks_equal_the_sequential_loop_conv4(first_order, workers):
    torch.manual_seed(0)
    model = Conv4(5).double()
    tasks = image_tasks()
    inner = InnerLoop.sgd(0.4, 2, first_order)
    params = P.get_params(model)
    one = gradients(model, params, tasks, CE, inner, 1)
    many = gradients(model, params, tasks, CE, inner, workers)
    assert_equal_grads(one, many)
    assert all(g is not None and g.abs().sum() > 0 for g in many[1])


def test_parallel_tasks_add_to_existing_grads_and_dropping_a_task_is_seen():
    torch.manual_seed(1)
    model = MLP().double()
    tasks = sample_sine_tasks(4, 5, 5, torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    inner = InnerLoop.sgd(0.01, 1)
    params = P.get_params(model)
    start = 0.25
    one = gradients(model, params, tasks, torch.nn.functional.mse_loss, inner, 1, start)
    many = gradients(model, params, tasks, torch.nn.functional.mse_loss, inner, 2, start)
    assert_equal_grads(one, many)
    fewer = gradients(model, params, tasks[:3], torch.nn.functional.mse_loss, inner, 2, start)
    assert not torch.allclose(fewer[1][0], one[1][0])


def test_a_subset_of_params_still_trains_the_rest_like_the_loop():
    """ANIL's call: θ = the head only; the body is the module's own parameters, used through each replica."""
    torch.manual_seed(2)
    model = P.allow_partial(Conv4(5).double())
    tasks = image_tasks(n=4)
    head = dict(list(P.get_params(model).items())[-2:])  # the linear layer's weight and bias
    inner = InnerLoop.sgd(0.4, 1)
    assert_equal_grads(gradients(model, head, tasks, CE, inner, 1), gradients(model, head, tasks, CE, inner, 2))


def test_map_tasks_order_workers_and_threads():
    threads = torch.get_num_threads()
    seen = taskpool.map_tasks(lambda x, w: (x, w, torch.get_num_threads()), list(range(7)), 3)
    assert [s[0] for s in seen] == list(range(7))
    assert [s[1] for s in seen] == [i % 3 for i in range(7)]
    assert all(s[2] == 1 for s in seen)  # one intra-op thread per worker
    assert torch.get_num_threads() == threads
    assert taskpool.map_tasks(lambda x, w: (x, w), [1, 2], 1) == [(1, 0), (2, 0)]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            taskpool.map_tasks(lambda x, w: x, [1], bad)


def test_replicas_share_tensors_but_not_modules():
    model = Conv4(5)
    copies = taskpool.replicas(model, 3)
    assert copies[0] is model and len(copies) == 3
    for c in copies[1:]:
        assert c is not model
        assert all(a is b for a, b in zip(model.parameters(), c.parameters()))


def test_training_with_workers_equals_training_without():
    fast = dict(iterations=6, meta_batch_size=4, val_every=3, val_tasks=4, checkpoint_every=3, batched=False)
    a = training.meta_train(Config(algo="fomaml", **fast), progress=False)
    b = training.meta_train(Config(algo="fomaml", workers=2, **fast), progress=False)
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-7), k


@pytest.mark.parametrize("options, message", [
    (dict(workers=0), "workers must be an integer >= 1"),
    (dict(workers=2, algo="anil"), "drop --workers"),
    (dict(workers=2, batched=True), "and --batched drop --workers"),
])
def test_bad_workers_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Config(**options).resolved()


def test_cli_bad_workers_is_one_line(tmp_path, capsys):
    assert main(["train", "--workers", "0", "--out", str(tmp_path / "x.pt"), "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert "workers must be an integer >= 1" in err and "\n" not in err


def test_execution_refuses_workers_with_the_batched_path_and_old_positional_flags():
    with pytest.raises(ValueError, match="choose one"):
        maml.Execution(batched=True, workers=2)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        maml.Execution(workers=0)
    model = MLP()
    with pytest.raises(TypeError, match="execution must be a maml.Execution"):
        maml.meta_backward(model, P.get_params(model), sample_sine_tasks(2, 5, 5), torch.nn.functional.mse_loss,
                           InnerLoop.sgd(0.01), True)


def test_workers_choose_the_loop_where_the_batched_path_would_be_the_default():
    """The sine MLP runs batched by default on the CPU; asking for workers runs the loop they parallelise."""
    model = MLP()
    assert training.use_batched(Config(algo="maml"), model)
    assert not training.use_batched(Config(algo="maml", workers=2), model)
