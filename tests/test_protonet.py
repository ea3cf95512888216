"""Prototypical networks: prototypes and logits against a hand computation, label permutations, the
gradient against finite differences (float64), the batched path against the loop, and a separable task."""

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mamlkit import params as P
from mamlkit import protonet
from mamlkit.models import Conv4
from mamlkit.tasks import Task


def test_prototypes_and_logits_by_hand():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [1.0, 1.0]], dtype=torch.float64)
    protos = protonet.prototypes(z, torch.tensor([0, 0, 1, 1]), 2)
    torch.testing.assert_close(protos, torch.tensor([[1.0, 0.0], [0.5, 2.5]], dtype=torch.float64))
    q = torch.tensor([[1.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    # |(1,1) − (1,0)|² = 1, |(1,1) − (.5,2.5)|² = 2.5, |(0,3) − (1,0)|² = 10, |(0,3) − (.5,2.5)|² = .5
    expected = -torch.tensor([[1.0, 2.5], [10.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(protonet.logits(q, protos), expected)


def linear_embedding():
    model = nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]]))
        model.bias.copy_(torch.tensor([0.5, -0.5]))
    return model


def test_task_logits_through_a_model_by_hand():
    model = linear_embedding()
    g = torch.Generator().manual_seed(0)
    xs, xq = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    ys = torch.tensor([0, 1, 2, 0, 1, 2])
    out = protonet.task_logits(model, P.get_params(model), xs, ys, xq, 3)
    w, b = model.weight.detach(), model.bias.detach()
    zs, zq = xs @ w.T + b, xq @ w.T + b
    expected = torch.empty(4, 3, dtype=torch.float64)
    for k in range(3):
        c = zs[ys == k].mean(0)
        for i in range(4):
            expected[i, k] = -float(((zq[i] - c) ** 2).sum())
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def image_tasks(n=3, ways=3, shots=2, queries=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(ways).repeat(shots).expand(n, -1).clone()
    yq = torch.randint(0, ways, (n, queries), generator=g)
    return Task(torch.rand(n, ways * shots, 1, 8, 8, generator=g, dtype=dtype), ys,
                torch.rand(n, queries, 1, 8, 8, generator=g, dtype=dtype), yq)


def small_conv():
    torch.manual_seed(0)
    return Conv4(channels=4, image_size=8, head=False).double()


def test_conv4_without_its_head_returns_features():
    full, body = Conv4(ways=5), Conv4(head=False)
    assert body(torch.rand(3, 1, 28, 28)).shape == (3, body.features) == (3, 256)
    assert set(P.get_params(body)) == set(P.get_params(full)) - {"13.weight", "13.bias"}
    assert body.ways is None and full.ways == 5


def test_permuting_the_class_labels_permutes_the_logits():
    model, tasks = small_conv(), image_tasks(n=1)
    task, perm = tasks[0], torch.tensor([2, 0, 1])
    params = P.get_params(model)
    out = protonet.task_logits(model, params, task.x_support, task.y_support, task.x_query, 3)
    permuted = protonet.task_logits(model, params, task.x_support, perm[task.y_support], task.x_query, 3)
    torch.testing.assert_close(permuted[:, perm], out, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(permuted, out)


def test_batched_equals_the_loop():
    model, tasks = small_conv(), image_tasks(n=4)
    params = P.get_params(model)
    loop = protonet.batch_logits(model, params, tasks, batched=False)
    torch.testing.assert_close(protonet.batch_logits(model, params, tasks, batched=True), loop,
                               rtol=1e-10, atol=1e-10)
    manual = torch.stack([F.cross_entropy(loop[i], tasks.y_query[i]) for i in range(4)]).mean()
    torch.testing.assert_close(protonet.loss(model, params, tasks, batched=False), manual)


def test_gradient_against_finite_differences():
    model, tasks = linear_embedding(), Task(*(t for t in image_tasks(n=2).tensors()[:4]))
    g = torch.Generator().manual_seed(1)
    tasks = Task(torch.randn(2, 6, 3, generator=g, dtype=torch.float64), tasks.y_support,
                 torch.randn(2, 4, 3, generator=g, dtype=torch.float64), tasks.y_query)
    names = list(P.get_params(model))

    def f(*values):
        return protonet.loss(model, dict(zip(names, values)), tasks, batched=False)

    values = tuple(v.detach().clone().requires_grad_() for v in P.get_params(model).values())
    assert torch.autograd.gradcheck(f, values, eps=1e-6, atol=1e-7, rtol=1e-5)
    params = P.get_params(model)
    model.zero_grad()
    loss = protonet.meta_backward(model, params, tasks, batched=False, scale=0.5)
    expected = torch.autograd.grad(f(*values), values)
    torch.testing.assert_close(loss, f(*values).detach())
    for p, e in zip(params.values(), expected):
        torch.testing.assert_close(p.grad, 0.5 * e)


def test_full_accuracy_on_a_separable_task():
    """Five well-separated clusters, the identity as embedding: every query is classified right."""
    g = torch.Generator().manual_seed(0)
    centers = 10.0 * torch.randn(5, 2, generator=g)
    n, shots, queries = 20, 1, 15
    ys, yq = torch.arange(5).repeat(shots).expand(n, -1), torch.randint(0, 5, (n, queries), generator=g)
    tasks = Task(centers[ys] + 0.1 * torch.randn(n, 5 * shots, 2, generator=g), ys,
                 centers[yq] + 0.1 * torch.randn(n, queries, 2, generator=g), yq)
    result = protonet.evaluate(nn.Flatten(), {}, tasks, chunk=7)
    assert result.steps == [0] and result.per_task.shape == (n, 1) and result.metric == "accuracy"
    assert result.at(0) == (1.0, 0.0)
    shuffled = Task(tasks.x_support, tasks.y_support, tasks.x_query, (tasks.y_query + 1) % 5)
    assert protonet.evaluate(nn.Flatten(), {}, shuffled).at(0)[0] == 0.0


def test_regression_tasks_and_missing_classes_are_refused():
    x = torch.rand(2, 5, 1)
    with pytest.raises(ValueError, match="integer class labels"):
        protonet.loss(nn.Linear(1, 4), P.get_params(nn.Linear(1, 4)), Task(x, x, x, x))
    tasks = image_tasks(n=2)
    broken = Task(tasks.x_support, torch.zeros_like(tasks.y_support).index_fill(1, torch.tensor([0]), 2),
                  tasks.x_query, tasks.y_query)
    with pytest.raises(ValueError, match="every class 0..2 needs at least one support example"):
        protonet.loss(small_conv(), P.get_params(small_conv()), broken)


# Training on Omniglot, checkpoints, evaluation, command line (the shared copy; skipped without it) ---------

SHARED = Path(os.environ.get("MAMLKIT_DATA", "/nonexistent")) / "omniglot"
needs_omniglot = pytest.mark.skipif(not SHARED.is_dir(), reason="the shared Omniglot copy is not on this machine")
FAST = dict(task="omniglot", algo="protonet", data_dir=str(SHARED), iterations=6, meta_batch_size=2, val_every=2,
            val_tasks=4, checkpoint_every=2)


@needs_omniglot
@pytest.mark.parametrize("batched", [False, True])
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, monkeypatch, batched):
    from mamlkit import training
    from mamlkit.checkpoint import load_checkpoint
    from mamlkit.config import Config

    config = Config(seed=2, batched=batched, **FAST)
    whole = training.meta_train(config, progress=False)
    assert "13.weight" not in whole.model.state_dict() and whole.model.ways is None  # the embedding, no classifier
    out, real_step = tmp_path / "run.pt", training.outer_step

    def crash_at_5(run, tasks, batched):
        if run.iteration == 5:
            raise KeyboardInterrupt
        return real_step(run, tasks, batched)

    monkeypatch.setattr(training, "outer_step", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        training.meta_train(config, out, progress=False)
    monkeypatch.setattr(training, "outer_step", real_step)
    assert load_checkpoint(out)["iteration"] == 4
    resumed = training.meta_train(config, out, resume=True, progress=False)
    a, b = resumed.model.state_dict(), whole.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == whole.history
    tasks = resumed.family.fixed_tasks("test", 5, 1)
    result = training.evaluate_run(resumed, tasks)
    assert result.steps == [0]
    torch.testing.assert_close(result.per_task, protonet.evaluate(resumed.model, P.get_params(resumed.model),
                                                                  tasks).per_task)


@needs_omniglot
def test_cli_trains_and_evaluates_protonet(tmp_path, capsys):
    from mamlkit.__main__ import main

    out = tmp_path / "p.pt"
    assert main(["train", "--task", "omniglot", "--algo", "protonet", "--iterations", "3", "--meta-batch-size", "2",
                 "--val-tasks", "4", "--data-dir", str(SHARED), "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    assert main(["evaluate", str(out), "--tasks", "6", "--data-dir", str(SHARED), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "| protonet |" in printed and "0 steps" in printed
    assert main(["evaluate", str(out), "--tasks", "6", "--steps", "1", "--data-dir", str(SHARED)]) == 2
    err = capsys.readouterr().err
    assert "prototypical networks do not fine-tune" in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_protonet_on_regression_in_one_line(tmp_path, capsys):
    from mamlkit.__main__ import main

    assert main(["train", "--algo", "protonet", "--task", "sinusoid", "--iterations", "1",
                 "--out", str(tmp_path / "x.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs a classification task" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()
