"""Notebook 09's measurements, plots and explorers of the methods beyond the lesson: each run adapted
with its own method's meta-test loop (``algorithms.test_loop``), how much adaptation changes a network's
layers (ANIL's feature-reuse argument), Meta-SGD's learned step sizes by layer, and an explorer of each
method's adaptation.

Introduced in notebook 09_beyond_maml.
"""

from __future__ import annotations

from contextlib import nullcontext

import ipywidgets as W
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from torch import Tensor, nn

from .. import algorithms, anil
from .. import params as P
from ..config import eval_protocol
from ..inner import InnerLoop
from ..runs import Run
from ..tasks import Task
from . import plots
from .feedback import Fail, call, checker, close, expect_params
from .widgets import SLIDER, Explorer, _fmt, _task, _task_controls


def protocol_of(run: Run, **overrides) -> dict:
    """The meta-test protocol of ``run``'s task and method, with ``overrides`` (e.g. ``inner_steps=1``)."""
    cfg = run.config
    return {**eval_protocol(cfg.task, cfg.algo, cfg.ways), **overrides}


def adapted_prediction(run: Run, task: Task, steps: int, x: Tensor) -> Tensor:
    """``run``'s model after ``steps`` steps of its own method's meta-test inner loop on ``task``'s support
    set (Meta-SGD: its learned α; MAML++: its per-step α; ANIL: the head only), evaluated at ``x``."""
    params, loop, context = algorithms.test_loop(run, protocol_of(run, inner_steps=steps))
    with context or nullcontext():
        adapted = loop.adapt(run.model, run.family.loss, params, task.x_support, task.y_support)[0] if steps else params
        with torch.no_grad():
            return P.forward(run.model, adapted, x)


def step_sizes(inner_params: P.Params) -> dict[str, tuple[float, float, float]]:
    """Meta-SGD's learned α (or MAML++'s per-step α): per parameter tensor, (mean, min, max)."""
    return {k: (float(v.mean()), float(v.min()), float(v.max())) for k, v in P.detach(inner_params).items()}


def plot_step_sizes(inner_params: P.Params, start: float | None = None, ax: Axes | None = None) -> Axes:
    """Bars of each parameter tensor's mean learned α with its min–max range; ``start``: the initial α."""
    ax = ax or plots._axes(None)
    stats = step_sizes(inner_params)
    names = list(stats)
    means = [stats[k][0] for k in names]
    low = [stats[k][0] - stats[k][1] for k in names]
    high = [stats[k][2] - stats[k][0] for k in names]
    ax.bar(range(len(names)), means, yerr=[low, high], capsize=3, color="C1", alpha=0.8,
           label="learned α (mean, min–max)")
    if start is not None:
        ax.axhline(start, color="grey", ls="--", lw=1, label=f"initial α = {start:g}")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
    ax.set(ylabel="α", title="Meta-SGD's step size per parameter")
    ax.legend(loc="best")
    return ax


def _activations(model: nn.Module, params: P.Params, x: Tensor) -> list[Tensor]:
    """The output of every ReLU (the body's features) and the model's output (the head's), in order."""
    seen: list[Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        out = P.forward(model, params, x)
    finally:
        for h in hooks:
            h.remove()
    return [*seen, out.detach()]


def representation_change(model: nn.Module, tasks: Task, loss_fn, inner_lr: float, steps: int) -> dict[str, float]:
    """How much ``steps`` SGD steps of ``inner_lr`` on each task's support set change each layer's output on its
    query set: the mean over tasks of ‖h′ − h‖ / ‖h‖ per layer (``relu1``, ``relu2``, …, ``output``).
    ANIL's argument: when the body's features barely move, adapting the head alone loses little."""
    loop = InnerLoop.sgd(inner_lr, steps)
    params = P.get_params(model)
    totals: list[float] = []
    for task in tasks:
        adapted = loop.adapt(model, loss_fn, params, task.x_support, task.y_support)[0]
        before, after = _activations(model, params, task.x_query), _activations(model, adapted, task.x_query)
        change = [float((b - a).norm() / b.norm().clamp_min(1e-12)) for b, a in zip(before, after)]
        totals = change if not totals else [t + c for t, c in zip(totals, change)]
    names = [f"relu{i + 1}" for i in range(len(totals) - 1)] + ["output"]
    return {name: total / len(tasks) for name, total in zip(names, totals)}


def plot_representation_change(change: dict[str, float], ax: Axes | None = None, label: str = "") -> Axes:
    ax = ax or plots._axes(None)
    ax.bar(list(change), [100 * v for v in change.values()], color="C0", alpha=0.8)
    ax.set(ylabel="relative change (%)", title=f"how much adaptation moves each layer's output {label}".strip())
    return ax


def adaptation_explorer(runs: dict[str, Run], steps: int = 1, max_steps: int = 10, seed: int = 1) -> Explorer:
    """A sine task (amplitude, phase, K) and a number of steps → each run adapted with its own method.
    ``state["mse"]``: the query MSE per run."""
    controls = {"inner_steps": W.IntSlider(value=steps, min=0, max=max_steps, description="inner steps", **SLIDER),
                **_task_controls()}

    def draw(ax, inner_steps, amplitude, phase, shots):
        task = _task(amplitude, phase, shots, seed=seed)
        plots.plot_truth(task, ax)
        grid = torch.linspace(-5, 5, 200)[:, None]
        mse = {}
        for name, run in runs.items():
            pred = adapted_prediction(run, task, inner_steps, torch.cat([grid, task.x_query]))
            mse[name] = float(((pred[len(grid):] - task.y_query) ** 2).mean())
            ax.plot(grid[:, 0], pred[: len(grid), 0], color=plots.color(name),
                    label=f"{plots.label(name)}: MSE {_fmt(mse[name])}")
        ax.set(ylim=(-6, 6), title=f"each method's own inner loop, {plots.steps_text(inner_steps)}, K={shots}")
        ax.legend(loc="lower left", fontsize="x-small")
        return {"task": task, "mse": mse}
    return Explorer(controls, draw)


def representation_explorer(model: nn.Module, tasks: Task, loss_fn, inner_lr: float = 0.01) -> Explorer:
    """Inner steps and α → the relative change of each layer's output (``representation_change``)."""
    controls = {"inner_steps": W.IntSlider(value=10, min=1, max=50, description="inner steps", **SLIDER),
                "inner_lr": W.FloatLogSlider(value=inner_lr, base=10, min=-3, max=-0.5, step=0.1,
                                             description="α (inner_lr)", readout_format=".3f", **SLIDER)}

    def draw(ax, inner_steps, inner_lr):
        change = representation_change(model, tasks, loss_fn, inner_lr, inner_steps)
        plot_representation_change(change, ax, f"(α={inner_lr:.3f}, {inner_steps} steps)")
        return {"change": change}
    return Explorer(controls, draw)


@checker
def check_anil_step(fn):
    """Exercise 9.1: one SGD step on the head only, keeping the graph."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    head, body = anil.split(model)
    before = P.flatten(P.get_params(model)).detach().clone()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, generator=gen, dtype=torch.float64)
    y = torch.sin(3 * x)
    head = {k: v.detach().requires_grad_() for k, v in head.items()}
    result = call(fn, model, head, x, y, F.mse_loss, 0.1)
    if isinstance(result, dict) and set(result) == set(P.get_params(model)):
        raise Fail("you returned every parameter: adapt and return the head only (the dict you were given)")
    flat = expect_params(result, head, "anil_step's result")
    with anil.head_only(model):
        loss = F.mse_loss(P.forward(model, head, x), y)
    grads = torch.autograd.grad(loss, list(head.values()), create_graph=True)
    right = {k: v - 0.1 * g for (k, v), g in zip(head.items(), grads)}
    if not P.flatten(P.get_params(model)).detach().equal(before):
        raise Fail("the model's own parameters changed: build a new dict for the head, leave the body alone")
    if close(flat, P.flatten({k: v + 0.1 * g for (k, v), g in zip(head.items(), grads)})):
        raise Fail("the step goes uphill: subtract α × the gradient")
    if not close(flat, P.flatten(right)):
        raise Fail("the new head differs from head − α ∇_head L(head): differentiate the support loss with respect "
                   "to the head's tensors and run the model with anil.head_only(model)")
    if not all(v.requires_grad and v.grad_fn is not None for v in result.values()):
        raise Fail("the result has no graph back to the head: pass create_graph=True to torch.autograd.grad")
    outer = torch.autograd.grad(sum(v.sum() for v in result.values()), list(head.values()), allow_unused=True)
    if any(g is None for g in outer):
        raise Fail("the result does not depend on the head you were given: compute it from `head`")
    return "anil_step adapts the head only, keeps the graph, and leaves the body untouched"
