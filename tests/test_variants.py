"""Notebook 09's helpers: each method adapted with its own meta-test loop, the representation change behind
ANIL, the learned step sizes, the explorers (from Python) and Exercise 9.1's checker."""

import pytest
import solutions  # instructor/solutions.py
import torch
import torch.nn.functional as F

from mamlkit import anil, models, params, tasks, training
from mamlkit.config import Config
from mamlkit.course import variants
from mamlkit.inner import SGD, InnerLoop


@pytest.fixture(scope="module")
def runs():
    out = {}
    for algo in ("maml", "metasgd", "anil", "mamlpp"):
        cfg = Config(algo=algo, iterations=3, meta_batch_size=2, val_every=3, val_tasks=2, checkpoint_every=3,
                     init="torch")
        out[algo] = training.meta_train(cfg, progress=False)
    return out


@pytest.fixture(scope="module")
def task():
    return tasks.sine_test_tasks(1)[0]


def test_adapted_prediction_uses_each_methods_own_loop(runs, task):
    x = torch.linspace(-5, 5, 7)[:, None]
    for algo in ("maml", "metasgd"):
        run = runs[algo]
        theta = params.get_params(run.model)
        lr = {k: v.detach() for k, v in run.inner_params.items()} if algo == "metasgd" else 0.01
        adapted = InnerLoop(SGD(lr), 3).adapt(run.model, F.mse_loss, theta, task.x_support, task.y_support)[0]
        expected = params.forward(run.model, adapted, x).detach()
        torch.testing.assert_close(variants.adapted_prediction(run, task, 3, x), expected)
    # Meta-SGD's learned α differs from 0.01 after training, so the two loops differ
    run = runs["metasgd"]
    plain = InnerLoop.sgd(0.01, 3).adapt(run.model, F.mse_loss, params.get_params(run.model), task.x_support,
                                         task.y_support)[0]
    assert not torch.allclose(variants.adapted_prediction(run, task, 3, x), params.forward(run.model, plain, x))


def test_anil_prediction_adapts_the_head_only(runs, task):
    run = runs["anil"]
    x = torch.linspace(-5, 5, 7)[:, None]
    head, body = anil.split(run.model)
    with anil.head_only(run.model):
        adapted = InnerLoop.sgd(0.01, 2).adapt(run.model, F.mse_loss, head, task.x_support, task.y_support)[0]
        expected = params.forward(run.model, adapted, x).detach()
    torch.testing.assert_close(variants.adapted_prediction(run, task, 2, x), expected)
    assert variants.adapted_prediction(run, task, 0, x).equal(params.forward(run.model, params.get_params(run.model),
                                                                             x).detach())


def test_representation_change_by_hand():
    torch.manual_seed(0)
    model = models.MLP((1, 5, 5, 1), init="torch").double()
    batch = tasks.sample_sine_tasks(2, 4, 6, torch.Generator().manual_seed(0), dtype=torch.float64)
    change = variants.representation_change(model, batch, F.mse_loss, 0.1, 2)
    assert list(change) == ["relu1", "relu2", "output"]
    def layers(p, x):  # relu1, relu2, output of the 1-5-5-1 MLP, by hand
        h1 = torch.relu(x @ p["0.weight"].T + p["0.bias"])
        h2 = torch.relu(h1 @ p["2.weight"].T + p["2.bias"])
        return [h1, h2, h2 @ p["4.weight"].T + p["4.bias"]]

    expected = []
    theta = params.get_params(model)
    for t in batch:
        adapted = InnerLoop.sgd(0.1, 2).adapt(model, F.mse_loss, theta, t.x_support, t.y_support)[0]
        adapted = params.detach(adapted)
        pairs = zip(layers(theta, t.x_query), layers(adapted, t.x_query))
        expected.append([float(((a - b).norm() / b.norm()).detach()) for b, a in pairs])
    mean = torch.tensor(expected).mean(0)
    torch.testing.assert_close(torch.tensor(list(change.values()), dtype=mean.dtype), mean)
    tiny = variants.representation_change(model, batch, F.mse_loss, 1e-9, 1)
    assert max(tiny.values()) < 1e-6


def test_step_sizes_and_plots(runs):
    stats = variants.step_sizes(runs["metasgd"].inner_params)
    assert set(stats) == set(runs["metasgd"].inner_params)
    assert all(low <= mean <= high for mean, low, high in stats.values())
    ax = variants.plot_step_sizes(runs["metasgd"].inner_params, start=0.01)
    assert len(ax.patches) == len(stats)
    ax = variants.plot_representation_change({"relu1": 0.1, "output": 0.5})
    assert [p.get_height() for p in ax.patches] == pytest.approx([10, 50])


def test_explorers_redraw_from_python(runs):
    explorer = variants.adaptation_explorer({"maml": runs["maml"], "metasgd": runs["metasgd"]})
    assert set(explorer.state["mse"]) == {"maml", "metasgd"}
    before = dict(explorer.state["mse"])
    explorer.controls["inner_steps"].value = 5
    assert explorer.redraws == 2 and explorer.state["mse"] != before
    model = models.MLP(init="torch")
    explorer = variants.representation_explorer(model, tasks.sine_test_tasks(3), F.mse_loss)
    small = explorer.state["change"]["output"]
    explorer.controls["inner_lr"].value = 0.1
    assert explorer.state["change"]["output"] > small


def test_check_anil_step_accepts_the_solution(capsys):
    assert variants.check_anil_step(solutions.anil_step)
    assert capsys.readouterr().out.startswith("✔")


def _all_params(model, head, x, y, loss_fn, lr):
    theta = params.get_params(model)
    grads = torch.autograd.grad(loss_fn(params.forward(model, theta, x), y), list(theta.values()), create_graph=True)
    return {k: v - lr * g for (k, v), g in zip(theta.items(), grads)}


def _uphill(model, head, x, y, loss_fn, lr):
    return solutions.anil_step(model, head, x, y, loss_fn, -lr)


def _no_graph(model, head, x, y, loss_fn, lr):
    return {k: v.detach() for k, v in solutions.anil_step(model, head, x, y, loss_fn, lr).items()}


def _in_place(model, head, x, y, loss_fn, lr):
    out = solutions.anil_step(model, head, x, y, loss_fn, lr)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    return out


def _without_head_only(model, head, x, y, loss_fn, lr):
    loss = loss_fn(model(x), y)  # the model's own head, not the dict: the gradient w.r.t. `head` is missing
    grads = torch.autograd.grad(loss, list(head.values()), allow_unused=True, create_graph=True)
    return {k: v - lr * (g if g is not None else 0) for (k, v), g in zip(head.items(), grads)}


@pytest.mark.parametrize("wrong,hint", [
    (_all_params, "return the head only"),
    (_uphill, "uphill"),
    (_no_graph, "create_graph=True"),
    (_in_place, "model's own parameters changed"),
    (_without_head_only, "anil.head_only"),
    (lambda *a: 1 / 0, "ZeroDivisionError"),
])
def test_check_anil_step_hints(wrong, hint, capsys):
    assert not variants.check_anil_step(wrong)
    out = capsys.readouterr().out
    assert out.startswith("✘") and hint in out, out
