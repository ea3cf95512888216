"""Interactive explorers (ipywidgets 8): controls wired to tested library functions, one figure per
widget redrawn in place, and ``quiz`` for the "Check yourself" questions. Each explorer keeps
``.fig``, ``.ax``, ``.controls`` and ``.state`` (the last result) so it can be tested from Python.

Introduced in notebook 01_tasks.
"""

from __future__ import annotations

import io
import math
import random
import time
import zlib

import ipywidgets as W
import matplotlib as mpl
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from .. import evaluation, training
from .. import params as P
from ..divergence import TrainingDiverged
from ..inner import InnerLoop
from ..maml import gradient_agreement
from ..tasks import Task, sine_tasks
from . import plots
from .families import Lines

SLIDER = dict(continuous_update=False, style={"description_width": "initial"})
BASE_FONT_SIZE = 10.0  # matplotlib's default font.size, the one the explorers' figure sizes are drawn for


class Explorer(W.VBox):
    """Controls above a figure; any change redraws the Axes through ``draw(ax, **values) -> state``."""

    def __init__(self, controls: dict, draw, figsize=(5.6, 3.2)):
        super().__init__()
        # figsize is for matplotlib's 10-point text: the figure grows with the font (notebook.present() sets 15
        # points, and a larger dpi), so titles and legends take the same share of it and still fit
        scale = mpl.rcParams["font.size"] / BASE_FONT_SIZE
        self.fig = Figure(figsize=(figsize[0] * scale, figsize[1] * scale), layout="constrained")
        self.ax = self.fig.add_subplot()
        self.controls, self.draw, self.state, self.redraws = controls, draw, {}, 0
        self.output, self.message = W.Output(), W.HTML()
        row = W.HBox(list(controls.values()), layout=W.Layout(flex_flow="row wrap"))
        self.children = [row, self.output, self.message]
        for control in controls.values():
            control.observe(lambda change: self.update(), names="value")
        self.update()

    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def update(self) -> None:
        self.ax.clear()
        try:
            self.state = self.draw(self.ax, **self.values()) or {}
            self.message.value = ""
        except ValueError as e:  # bad settings read as one line, never a traceback
            self.state = {"error": str(e)}
            self.message.value = f"⚠️ {e}"
        self.redraws += 1
        self.show()

    def show(self) -> None:
        """Render the figure as a PNG into the output area (works with any matplotlib backend)."""
        from IPython import get_ipython
        from IPython.display import Image, display

        if get_ipython() is None:  # plain Python (tests): nothing to render into
            return
        buffer = io.BytesIO()
        self.fig.savefig(buffer, format="png")
        with self.output:
            self.output.clear_output(wait=True)
            display(Image(data=buffer.getvalue(), format="png"))


def _task(amplitude, phase, shots, queries=100, seed=0) -> Task:
    """One sine task with the given amplitude and phase; the same x draws for the same seed."""
    return sine_tasks(torch.tensor([float(amplitude)]), torch.tensor([float(phase)]), int(shots), queries,
                      torch.Generator().manual_seed(seed))[0]


def _task_controls(shots=5, max_shots=20) -> dict:
    return {"amplitude": W.FloatSlider(value=2.0, min=0.1, max=5.0, step=0.1, description="amplitude A", **SLIDER),
            "phase": W.FloatSlider(value=1.0, min=0.0, max=3.14, step=0.02, description="phase φ", **SLIDER),
            "shots": W.IntSlider(value=shots, min=1, max=max_shots, description="K (support points)", **SLIDER)}


def task_explorer(seed: int = 0) -> Explorer:
    """Sample a sine task by amplitude and phase: truth, support points, query points."""
    def draw(ax, amplitude, phase, shots):
        task = _task(amplitude, phase, shots, queries=20, seed=seed)
        plots.plot_truth(task, ax)
        ax.plot(task.x_query[:, 0], task.y_query[:, 0], "o", mfc="none", color="grey", ms=4, label="query")
        ax.set(ylim=(-5.5, 5.5), title=f"y = {amplitude:.1f} sin(x − {phase:.2f})")
        ax.legend(loc="lower left", fontsize="x-small")
        return {"task": task}
    return Explorer(_task_controls(), draw)


def adaptation_explorer(models: dict, inner_lr: float = 0.01, steps: int = 1, max_steps: int = 20,
                        shots: int = 5, seed: int = 1) -> Explorer:
    """α, inner steps, K and the task → the adapted curve of each model ({name: nn.Module}).

    With several models an algorithm selector picks one or "all". ``state["mse"]`` holds the query
    MSE after adaptation per model.
    """
    controls = {"inner_lr": W.FloatLogSlider(value=inner_lr, base=10, min=-3, max=0, step=0.1,
                                             description="α (inner_lr)", readout_format=".3f", **SLIDER),
                "inner_steps": W.IntSlider(value=steps, min=0, max=max_steps, description="inner steps", **SLIDER),
                **_task_controls(shots)}
    if len(models) > 1:
        controls["algo"] = W.Dropdown(options=["all", *models], value="all", description="algorithm")

    def draw(ax, inner_lr, inner_steps, amplitude, phase, shots, algo="all"):
        task = _task(amplitude, phase, shots, seed=seed)
        plots.plot_truth(task, ax)
        shown = [name for name in models if algo in ("all", name)]
        mse = {}
        for name in shown:
            model = models[name]
            curves = plots.adapted_curves(model, P.get_params(model), task, inner_lr, (0, inner_steps))
            mse[name] = plots.query_mse(model, curves[inner_steps], task)
            start_label = f"{plots.label(name)}, 0 steps" if len(shown) == 1 else "_nolegend_"
            plots.plot_prediction(model, curves[0], ax, name, ls=":", alpha=0.6, label=start_label)
            plots.plot_prediction(model, curves[inner_steps], ax, name,
                                  label=f"{plots.label(name)}, {plots.steps_text(inner_steps)}: MSE {_fmt(mse[name])}")
        title = f"α={inner_lr:.3f}, {plots.steps_text(inner_steps)}, K={shots} (dotted: before adapting)"
        ax.set(ylim=(-6, 6), title=title)
        ax.legend(loc="lower left", fontsize="x-small")
        return {"task": task, "mse": mse}
    return Explorer(controls, draw)


def _fmt(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) and v < 1e4 else "diverged"


def meta_gradient_explorer() -> Explorer:
    """A 1-parameter linear model y = w x: the meta-loss L_query(w − α L′_support(w)) against w, with
    the MAML (exact) and FOMAML (no Hessian) slopes drawn as tangents at the chosen w."""
    model = nn.Linear(1, 1, bias=False).double()
    x = torch.tensor([[[-2.0], [-1.0], [0.5], [2.0]]], dtype=torch.float64)
    x_query = torch.tensor([[[-1.5], [0.0], [1.0], [2.5]]], dtype=torch.float64)
    task = Task(x, 1.5 * x + 0.3, x_query, 1.5 * x_query - 0.2)
    hessian = float(2 * (x**2).mean())  # H = L″_support(w), the same for every w
    controls = {"w": W.FloatSlider(value=-1.0, min=-2.0, max=4.0, step=0.1, description="w", **SLIDER),
                "inner_lr": W.FloatSlider(value=0.1, min=0.01, max=0.3, step=0.01, description="α", **SLIDER)}

    def draw(ax, w, inner_lr):
        ws = torch.linspace(-2, 4, 61).tolist()
        ax.plot(ws, [plots.meta_loss_and_slope(model, task, v, inner_lr)[0] for v in ws], color="k", lw=1,
                label="meta-loss")
        loss, slope = plots.meta_loss_and_slope(model, task, w, inner_lr)
        _, fo_slope = plots.meta_loss_and_slope(model, task, w, inner_lr, first_order=True)
        for s, name in ((slope, "maml"), (fo_slope, "fomaml")):
            ax.plot([w - 0.6, w + 0.6], [loss - 0.6 * s, loss + 0.6 * s], color=plots.color(name),
                    lw=2, label=f"{plots.label(name)} slope {s:.2f}")
        ax.set(xlabel="w", ylabel="L_query(w′)", title=f"α={inner_lr:.2f}: slopes differ by the factor (1 − αH)")
        ax.legend(fontsize="x-small")
        return {"maml_slope": slope, "fomaml_slope": fo_slope, "hessian": hessian}
    return Explorer(controls, draw)


def first_order_explorer(model, tasks, inner_lr: float = 0.01, steps: int = 1) -> Explorer:
    """α and inner steps → every component of the MAML meta-gradient against the FOMAML one."""
    params = P.detach(P.get_params(model), requires_grad=True)
    controls = {"inner_lr": W.FloatLogSlider(value=inner_lr, base=10, min=-3, max=-0.5, step=0.1,
                                             description="α (inner_lr)", readout_format=".3f", **SLIDER),
                "inner_steps": W.IntSlider(value=steps, min=1, max=5, description="inner steps", **SLIDER)}

    def draw(ax, inner_lr, inner_steps):
        full, first, cosine = gradient_agreement(model, params, tasks, inner_lr, inner_steps)
        ax.plot(full, first, ".", color=plots.color("fomaml"), ms=3, alpha=0.6)
        lim = float(torch.cat([full, first]).abs().nan_to_num(0.0, 0.0, 0.0).max()) or 1.0
        ax.plot([-lim, lim], [-lim, lim], "--", color="k", lw=0.8, label="agreement")
        title = f"cosine similarity {cosine:.3f}" if math.isfinite(cosine) else "diverged: lower α or the steps"
        ax.set(xlabel="MAML meta-gradient component", ylabel="FOMAML component", title=title)
        ax.legend(fontsize="x-small")
        return {"cosine": cosine}
    return Explorer(controls, draw, figsize=(4.2, 3.6))


def line_tasks(n: int = 4, shots: int = 5, seed: int = 0) -> Task:
    """Linear regression tasks (``course.families.Lines``) for a 2-parameter picture."""
    return Lines().sample(n, "train", shots, shots, torch.Generator().manual_seed(seed))


def reptile_explorer(n_tasks: int = 4, seed: int = 0) -> Explorer:
    """ε, k and α → one Reptile step for a linear model in its 2-D parameter plane (slope, intercept),
    next to the same move made with k steps of joint training: they coincide when k = 1."""
    model, tasks = nn.Linear(1, 1), line_tasks(n_tasks, seed=seed)
    theta = {"weight": torch.tensor([[-1.5]]), "bias": torch.tensor([1.5])}
    controls = {"outer_lr": W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="ε (outer_lr)", **SLIDER),
                "inner_steps": W.IntSlider(value=1, min=1, max=20, description="k (inner steps)", **SLIDER),
                "inner_lr": W.FloatSlider(value=0.1, min=0.01, max=0.3, step=0.01, description="α", **SLIDER)}
    xy = lambda p: (float(p["weight"]), float(p["bias"]))

    def draw(ax, outer_lr, inner_steps, inner_lr):
        for i, task in enumerate(tasks):
            path, _ = InnerLoop.sgd(inner_lr, inner_steps).trajectory(model, F.mse_loss, theta, task.x_support,
                                                                      task.y_support, graph=False)
            ax.plot(*zip(*map(xy, path)), "-", color=plots.color("reptile"), alpha=0.4, lw=1)
            ax.plot(*xy(path[-1]), "o", color=plots.color("reptile"), ms=3)
            ax.plot(*task.info.tolist(), "*", color=f"C{3 + i}", ms=10, label=f"task {i} optimum")
        new, joint, gap = plots.reptile_against_joint(model, theta, tasks, inner_lr, inner_steps, outer_lr)
        ax.plot(*xy(theta), "ko", ms=7, label="θ")
        ax.plot(*xy(joint), "s", color=plots.color("pretrain"), ms=8, label="same with joint training")
        ax.plot(*xy(new), "o", color=plots.color("reptile"), ms=7, label="Reptile: θ + ε(mean φ − θ)")
        ax.set(xlabel="slope (weight)", ylabel="intercept (bias)",
               title=f"k={inner_steps}: |Reptile − joint| = {gap:.3f}")
        ax.legend(fontsize="x-small", loc="best")
        return {"new": new, "joint": joint, "gap": gap}
    return Explorer(controls, draw, figsize=(5.0, 3.8))


class LiveRun(W.VBox):
    """A button that trains ``config`` now (``training.meta_train``; tqdm's bar shows the progress), then scores
    the new θ on ``tasks`` with ``protocol`` beside ``reference`` (a trained model, scored the same way) and
    reports the paired difference after ``step`` steps: for an instructor to train the real protocol in the
    lecture. ``.run()`` is what the button calls; ``.state`` keeps the seconds, both results and the difference."""

    def __init__(self, config, reference: nn.Module, tasks: Task, protocol, step: int = 1, device="cpu"):
        super().__init__()
        self.config, self.reference, self.tasks, self.protocol, self.step = config, reference, tasks, protocol, step
        self.device, self.state, self.run_ = device, {}, None
        try:
            iterations, error = f"{config.resolved().iterations:,} ", None
        except ValueError as e:  # a bad setting shows at once, not after a click
            iterations, error = "", e
        self.button = W.Button(description=f"train {iterations}iterations now", button_style="info",
                               layout=W.Layout(width="max-content"))
        self.output, self.message = W.Output(), W.HTML()
        self.button.on_click(lambda _: self.run())
        self.children = [self.button, self.output, self.message]
        if error:
            self._fail(error)

    def _fail(self, error: Exception) -> dict:
        self.state = {"error": str(error)}
        self.message.value = f"⚠️ {error}"
        return self.state

    def run(self) -> dict:
        self.button.disabled = True
        try:
            start = time.perf_counter()
            with self.output:
                self.run_ = training.meta_train(self.config, device=self.device, progress=True)
            seconds = time.perf_counter() - start
            ours, theirs = (evaluation.evaluate(m, P.get_params(m), self.tasks, F.mse_loss, self.protocol)
                            for m in (self.run_.model, self.reference))
            diff, ci = evaluation.paired_difference(ours, theirs, self.step)
        except (ValueError, TrainingDiverged) as e:  # one line, never a traceback
            return self._fail(e)
        except torch._dynamo.exc.TorchDynamoException as e:  # compiled=True where torch.compile cannot build
            return self._fail(f"torch.compile failed on this machine ({type(e).__name__}); train without it: "
                              f"Config(..., compiled=False)")
        finally:
            self.button.disabled = False
        (mse, mse_ci), (ref, ref_ci) = ours.at(self.step), theirs.at(self.step)
        self.state = {"seconds": seconds, "ours": ours, "reference": theirs, "difference": (diff, ci)}
        verdict = ("no significant difference" if abs(diff) <= ci
                   else f"significantly {'lower' if diff < 0 else 'higher'}")
        self.message.value = (
            f"{self.run_.iteration:,} iterations in {seconds:.0f} s. Query MSE after {self.step} "
            f"step{'s' * (self.step > 1)} on "
            f"{len(ours.per_task)} test tasks: {mse:.3f} ± {mse_ci:.3f} (the loaded model: {ref:.3f} ± {ref_ci:.3f}); "
            f"new − loaded, paired: {diff:+.3f} ± {ci:.3f} ({verdict}).")
        return self.state


class Quiz(W.VBox):
    """A multiple-choice question that answers every option: why the right one is right (``right``: the
    answer and its explanation) and why each wrong one is wrong (``wrong``: option -> its own feedback).
    The options appear in an order shuffled by the question text, the same on every run; ``.answer``,
    ``.options``, ``.choice``, ``.correct``, ``.feedback``."""

    def __init__(self, question: str, right: tuple, wrong: dict):
        super().__init__()
        self.answer, explanation = right
        self.why = {self.answer: explanation, **wrong}
        self.options = shuffled([self.answer, *wrong], question)
        self.correct = None
        self.choice = W.RadioButtons(options=self.options, value=None, layout=W.Layout(width="max-content"))
        self.feedback = W.HTML()
        self.children = [W.HTML(f"<b>{question}</b>"), self.choice, self.feedback]
        self.choice.observe(self._answer, names="value")

    def _answer(self, change) -> None:
        if change["new"] is None:
            return
        self.correct = change["new"] == self.answer
        why = self.why[change["new"]]
        self.feedback.value = f"✔ Correct: {why}" if self.correct else f"✘ Not this one: {why} Try another."


def shuffled(options: list, question: str) -> list:
    """``options`` in an order drawn from a seed made of the question's text: fixed for a question, varied
    across questions (so the right answer is not always in the same place)."""
    order = list(options)
    random.Random(zlib.crc32(question.encode())).shuffle(order)
    return order


def quiz(question: str, right: tuple, wrong: dict) -> Quiz:
    """A "Check yourself" question: ``right = (answer, why it is right)``, ``wrong = {option: why it is
    wrong}``, one entry per wrong option. Shown in a shuffled, reproducible order."""
    if not (isinstance(right, tuple) and len(right) == 2 and all(isinstance(s, str) and s.strip() for s in right)):
        raise ValueError("right should be a pair (answer, explanation) of non-empty strings")
    if not (isinstance(wrong, dict) and wrong):
        raise ValueError("wrong should be a dict {wrong option: why it is wrong} with at least one option")
    for option, why in wrong.items():
        if not (isinstance(why, str) and why.strip()):
            raise ValueError(f"the wrong option {option!r} needs its own feedback: why it is wrong")
    if right[0] in wrong:
        raise ValueError(f"the answer {right[0]!r} is also listed as a wrong option")
    return Quiz(question, right, wrong)
