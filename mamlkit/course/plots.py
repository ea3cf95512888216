"""Small labelled figures, one colour per role across the course: truth black dashed, support points
as markers, MAML C0, FOMAML C1, Reptile C2, the pretrained baseline grey. Every ``plot_*`` takes
``ax=None`` (a new figure) and returns the Axes.

Introduced in notebook 01_tasks.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from .. import maml, reptile
from .. import params as P
from ..inner import InnerLoop
from ..tasks import sine, sine_grid

COLORS = {"maml": "C0", "fomaml": "C1", "reptile": "C2", "pretrain": "grey", "truth": "black", "support": "k",
          "metasgd": "C4", "anil": "C5", "mamlpp": "C6", "imaml": "C8", "protonet": "C9"}
LABELS = {"maml": "MAML", "fomaml": "FOMAML", "reptile": "Reptile", "pretrain": "pretrained", "metasgd": "Meta-SGD",
          "anil": "ANIL", "mamlpp": "MAML++", "mamlpp-lslr": "MAML++ LSLR", "imaml": "iMAML",
          "protonet": "prototypical networks"}
STEP_STYLES = [":", "--", "-", "-."]


def color(name: str) -> str:
    """The course's colour for a method (``maml``, ``fomaml``, ``reptile``, ``pretrain``)."""
    return COLORS.get(name, "C3")


def label(name: str) -> str:
    return LABELS.get(name, name)


def steps_text(k: int) -> str:
    return f"{k} step" if k == 1 else f"{k} steps"


def _axes(ax):
    return plt.subplots()[1] if ax is None else ax


def plot_truth(task, ax=None, label="truth"):
    """The task's true sine (black dashed) and its support points (markers)."""
    ax = _axes(ax)
    x = sine_grid()
    amplitude, phase = (float(v) for v in task.info)
    ax.plot(x[:, 0], sine(x[:, 0], amplitude, phase), "--", color=COLORS["truth"], lw=1.2, label=label)
    ax.plot(task.x_support[:, 0].cpu(), task.y_support[:, 0].cpu(), "^", color=COLORS["support"], ms=6,
            label=f"support (K={len(task.x_support)})")
    ax.set(xlabel="x", ylabel="y")
    return ax


def plot_tasks(tasks, ax=None, n: int = 5):
    """The true curves and support points of the first ``n`` tasks of a batch, one colour per task."""
    ax = _axes(ax)
    x = sine_grid()[:, 0]
    for i, task in enumerate(list(tasks)[:n]):
        amplitude, phase = (float(v) for v in task.info)
        c = f"C{3 + i % 7}"
        ax.plot(x, sine(x, amplitude, phase), "--", color=c, lw=1, label=f"A={amplitude:.1f}, φ={phase:.1f}")
        ax.plot(task.x_support[:, 0].cpu(), task.y_support[:, 0].cpu(), "^", color=c, ms=5)
    ax.set(xlabel="x", ylabel="y", title=f"{min(n, len(tasks))} tasks (support points as ▲)")
    ax.legend(loc="lower left", fontsize="x-small")
    return ax


def plot_prediction(model, params, ax=None, name="maml", **kwargs):
    """The model's curve with ``params`` over x in [-5, 5]."""
    ax = _axes(ax)
    x = sine_grid(device=next(iter(params.values())).device)
    with torch.no_grad():
        y = P.forward(model, params, x)
    kwargs = {"color": color(name), "label": label(name), **kwargs}
    ax.plot(x[:, 0].cpu(), y[:, 0].cpu(), **kwargs)
    return ax


def adapted_curves(model, params, task, inner_lr: float, steps=(0, 1, 10), loss_fn=F.mse_loss) -> dict:
    """Parameters after each number of inner steps in ``steps`` (first order, detached): {k: params}."""
    path, _ = InnerLoop.sgd(inner_lr, max(steps)).trajectory(model, loss_fn, params, task.x_support,
                                                             task.y_support, graph=False)
    return {k: path[k] for k in sorted(steps)}


def query_mse(model, params, task) -> float:
    """The query MSE of one task with ``params`` (no graph): the number an adapted curve is labelled with."""
    with torch.no_grad():
        return float(F.mse_loss(P.forward(model, params, task.x_query), task.y_query))


def meta_loss_and_slope(model, task, w: float, inner_lr: float, first_order: bool = False) -> tuple[float, float]:
    """For a one-weight model (``weight`` of shape (1, 1)): the meta-loss L_query(w − α L′_support(w)) at
    ``w`` and its slope, exact (MAML) or without the Hessian term (``first_order``, FOMAML)."""
    params = {"weight": torch.tensor([[w]], dtype=torch.float64, requires_grad=True)}
    loss = maml.maml_loss(model, params, task, F.mse_loss, inner_lr, first_order=first_order)
    return loss.item(), torch.autograd.grad(loss, params["weight"])[0].item()


def reptile_against_joint(model, theta, tasks, inner_lr: float, inner_steps: int, outer_lr: float):
    """One Reptile step from ``theta`` and the same move made by ``inner_steps`` steps of joint training on
    the pooled support sets, with the distance between them: ``(reptile, joint, gap)`` (equal for k = 1)."""
    new = reptile.reptile_step(model, theta, tasks, F.mse_loss, inner_lr, inner_steps, outer_lr)
    joint = P.lerp(theta, reptile.joint_step(model, theta, tasks, inner_lr, inner_steps), outer_lr)
    return new, joint, float(P.norm(P.sub(new, joint)))


def plot_adaptation(model, params, task, inner_lr: float = 0.01, steps=(0, 1, 10), ax=None, name="maml"):
    """Truth, support points, and the model's curve after 0, 1, 10 inner steps (the paper's figure)."""
    ax = plot_truth(task, ax)
    for i, (k, adapted) in enumerate(adapted_curves(model, params, task, inner_lr, steps).items()):
        plot_prediction(model, adapted, ax, name, ls=STEP_STYLES[i % 4], label=f"{label(name)}, {steps_text(k)}",
                        alpha=0.5 + 0.5 * (i + 1) / len(steps))
    ax.set(title=f"{label(name)}, α={inner_lr:g}")
    ax.legend(loc="lower left", fontsize="x-small")
    return ax


def plot_learning_curve(history: dict, ax=None, name="maml"):
    """Training loss (line) and validation loss after adaptation (markers) against iterations."""
    ax = _axes(ax)
    ax.plot(history["iteration"], history["train_loss"], color=color(name), alpha=0.6, label=f"{label(name)} train")
    val = [(i, v) for i, v in zip(history["iteration"], history["val_metric"]) if v == v]
    if val:
        ax.plot(*zip(*val), "o-", color=color(name), ms=4, label=f"{label(name)} validation")
    ax.set(xlabel="outer iteration", ylabel="loss (MSE)", yscale="log")
    ax.legend()
    return ax


def plot_validation(histories: dict, ax=None, ylabel: str = "validation accuracy"):
    """The validation metric recorded during meta-training against iterations, one line per method
    (``{"maml": run.history, ...}``; a checkpoint's ``history``)."""
    ax = _axes(ax)
    for name, history in histories.items():
        val = [(i, v) for i, v in zip(history["iteration"], history["val_metric"]) if v == v]
        ax.plot(*zip(*val), "o-", color=color(name), ms=3, label=label(name))
    ax.set(xlabel="outer iteration", ylabel=ylabel)
    ax.legend()
    return ax


def plot_time_to_accuracy(curve: dict, targets=((20, 0.95), (120, 0.98)), ax=None):
    """Validation accuracy against wall-clock minutes of training (``curve``: ``minutes``, ``val``, and optionally
    ``test``, a list of ``{minutes, mean, ci95}`` measured on the fixed test tasks, drawn with their 95% CI), with
    each target (minutes, accuracy) as a marked corner to reach."""
    ax = _axes(ax)
    points = [(m, v) for m, v in zip(curve["minutes"], curve["val"]) if m == m and v == v]
    if points:
        ax.plot(*zip(*points), "-", color=color("maml"), label="validation (fixed tasks)")
    for t in curve.get("test", []):
        ax.errorbar(t["minutes"], t["mean"], yerr=t["ci95"], fmt="s", color="black", ms=5, capsize=3)
    if curve.get("test"):
        ax.plot([], [], "s", color="black", label="test, 600 tasks ± 95% CI")
    for minutes, accuracy in targets:
        ax.plot([minutes, minutes], [0, accuracy], ":", color="grey")
        ax.plot([0, minutes], [accuracy, accuracy], ":", color="grey")
        ax.annotate(f"target {accuracy:.0%} by {minutes:g} min", (minutes, accuracy), fontsize="x-small",
                    xytext=(-3, 3), textcoords="offset points", ha="right")
    lowest = min([v for _, v in points] + [t["mean"] - t["ci95"] for t in curve.get("test", [])], default=0.5)
    ax.set(xlabel="wall-clock minutes of training", ylabel="accuracy", ylim=(min(0.9, lowest - 0.02), 1.0),
           xlim=(0, None))
    ax.legend(loc="lower right")
    return ax


def plot_eval(results: dict, ax=None, log: bool = False):
    """Query MSE against inner steps with a 95% CI band, one line per method: {name: EvalResult}.

    The y range is set by the error before adaptation, so a task that diverges (mean = nan or huge)
    leaves the chart instead of squashing it; the legend says how many tasks diverged.
    """
    ax = _axes(ax)
    for name, result in results.items():
        mean, ci = result.mean.numpy(), result.ci95.numpy()
        diverged = int((~torch.isfinite(result.per_task)).any(1).sum())
        text = label(name) + (f" ({diverged} task{'s' * (diverged > 1)} diverged: mean = nan)" if diverged else "")
        ax.plot(result.steps, mean, "o-", ms=3, color=color(name), label=text)
        ax.fill_between(result.steps, mean - ci, mean + ci, color=color(name), alpha=0.2)
    top = 1.3 * max(float(r.mean[0] + r.ci95[0]) for r in results.values())
    low = min(float(r.mean.nan_to_num(top, top, top).min()) for r in results.values())
    if log:
        ax.set(yscale="log", ylim=(0.7 * low, top))
    else:
        ax.set(ylim=(0, top))
    n = len(next(iter(results.values())).per_task)
    ax.set(xlabel="inner steps at test time", ylabel=f"query MSE (mean ± 95% CI, {n} tasks)")
    ax.legend()
    return ax


def plot_cost(steps, costs: dict, ylabel: str, ax=None):
    """A cost (time, memory, ...) against the number of inner steps, one line per method."""
    ax = _axes(ax)
    for name, values in costs.items():
        ax.plot(list(steps), list(values), "o-", color=color(name), label=label(name))
    ax.set(xlabel="inner steps", ylabel=ylabel)
    ax.legend()
    return ax


def plot_two_loops(ax=None):
    """The two loops of MAML as a diagram: the outer loop (general performance, left) hands θ to the inner
    loop of each task (task-specific, right), which adapts it on the support set to θ′_i; the query losses of
    the θ′_i come back to improve θ. Introduced in notebook 00_welcome."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    ax = plt.subplots(figsize=(6.4, 2.6))[1] if ax is None else ax
    boxes = {  # name: (x, y, width, height, colour, text)
        "outer": (0.01, 0.12, 0.42, 0.76, "C0", "outer loop: general\nperformance (all tasks)\n\n"
                  r"$\theta \leftarrow \theta - \beta\nabla_\theta \sum_i \mathcal{L}_{query}(\theta'_i)$"),
        "inner": (0.57, 0.12, 0.42, 0.76, "C1", "inner loop: task-specific\n(one task, support set)\n\n"
                  r"$\theta'_i = \theta - \alpha \nabla_\theta \mathcal{L}_{support}(\theta)$"),
    }
    for x, y, w, h, c, text in boxes.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01,rounding_size=0.04", fc=c, alpha=0.15,
                                    ec=c, lw=1.5))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize="small")
    arrows = [((0.43, 0.70), (0.57, 0.70), r"$\theta$ to each task", 0.78),
              ((0.57, 0.30), (0.43, 0.30), r"$\mathcal{L}_{query}(\theta'_i)$", 0.22)]
    for start, end, text, y in arrows:
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, lw=1.5, color="k"))
        ax.text(0.5, y, text, ha="center", va="center", fontsize="x-small")
    ax.set(xlim=(0, 1), ylim=(0, 1), xticks=[], yticks=[], title="MAML's two loops")
    ax.set_frame_on(False)
    ax.grid(False)
    return ax


def adaptation_picture(inner_lr: float = 0.7, seed: int = 2, n_tasks: int = 3) -> dict:
    """The numbers behind ``plot_theta_to_adapted``: ``n_tasks`` quadratic task losses
    L_i(θ) = ½ (θ − c_i)ᵀ A_i (θ − c_i) in a 2-D parameter plane, θ, each θ′_i = θ − α ∇L_i(θ), and the MAML
    meta-gradient Σ_i (I − α A_i) ∇L_i(θ′_i) (query loss = support loss here), all in float64."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float64
    theta = torch.tensor([0.0, 0.0], dtype=dtype)
    angles = torch.arange(n_tasks, dtype=dtype) * 2 * torch.pi / n_tasks + 0.4
    centres = 1.8 * torch.stack([angles.cos(), angles.sin()], 1) + 0.3 * torch.randn(n_tasks, 2, generator=g,
                                                                                     dtype=dtype)
    curvatures = []
    for _ in range(n_tasks):
        q, _ = torch.linalg.qr(torch.randn(2, 2, generator=g, dtype=dtype))
        curvatures.append(q @ torch.diag(torch.tensor([1.0, 0.3], dtype=dtype)) @ q.T)
    adapted, meta_grad = [], torch.zeros(2, dtype=dtype)
    for c, a in zip(centres, curvatures):
        phi = theta - inner_lr * a @ (theta - c)              # θ′_i = θ − α ∇L_i(θ)
        adapted.append(phi)
        meta_grad += (torch.eye(2, dtype=dtype) - inner_lr * a) @ (a @ (phi - c))  # (I − αA_i) ∇L_i(θ′_i)
    meta_grad /= n_tasks
    return {"theta": theta, "centres": centres, "curvatures": curvatures, "adapted": torch.stack(adapted),
            "meta_grad": meta_grad, "inner_lr": inner_lr}


def plot_theta_to_adapted(ax=None, **kwargs):
    """θ in a 2-D parameter plane moving, per task, to θ′_i along −α∇L_i(θ) (the inner step), each task's
    loss contours around its optimum (★), and the direction of the outer step, −meta-gradient (dashed). The
    numbers come from ``adaptation_picture(**kwargs)``. Introduced in notebook 00_welcome."""
    ax = plt.subplots(figsize=(4.8, 4.2))[1] if ax is None else ax
    pic = adaptation_picture(**kwargs)
    grid = torch.linspace(-3.5, 3.5, 120, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([xx, yy], -1)
    theta = pic["theta"]
    for i, (c, a, phi) in enumerate(zip(pic["centres"], pic["curvatures"], pic["adapted"])):
        col = f"C{3 + i}"
        d = points - c
        loss = 0.5 * torch.einsum("...i,ij,...j->...", d, a, d)
        ax.contour(xx, yy, loss, levels=[0.1, 0.5, 1.2], colors=col, alpha=0.35, linewidths=0.8)
        ax.plot(*c, "*", color=col, ms=10)
        ax.annotate("", xy=phi.tolist(), xytext=theta.tolist(), arrowprops={"arrowstyle": "-|>", "color": col,
                                                                           "lw": 1.5})
        ax.text(phi[0] + 0.12, phi[1] + 0.12, rf"$\theta'_{i + 1}$", color=col)
    direction = -pic["meta_grad"] / pic["meta_grad"].norm()  # drawn at a fixed length: its size depends on β
    tip = theta + 1.3 * direction
    ax.annotate("", xy=tip.tolist(), xytext=theta.tolist(),
                arrowprops={"arrowstyle": "-|>", "color": "k", "lw": 2, "ls": "--"})
    ax.plot(*theta, "ko", ms=6)
    ax.text(theta[0] - 0.45, theta[1] - 0.1, r"$\theta$")
    ax.text(tip[0], tip[1] + 0.2, "outer step: −meta-gradient\n(its direction)", fontsize="x-small", ha="center",
            va="bottom")
    ax.set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), aspect="equal", xticks=[], yticks=[],
           title=rf"inner steps $\theta \to \theta'_i = \theta - \alpha\nabla\mathcal{{L}}_i(\theta)$, "
                 rf"$\alpha$ = {pic['inner_lr']:g}", xlabel="parameter 1",
           ylabel="parameter 2")
    return ax
