"""The graded homework (homework/, nbgrader): sources and notebooks in sync; every homework checker
accepts the instructor's solution and rejects typical mistakes in one line; the student version that
``nbgrader generate_assignment`` writes carries no solution and no hidden test, and runs to the end
with readable ✘ lines; ``nbgrader autograde`` gives the solutions full points, a partial
submission partial points, and a submission that calls the library's own implementation none (hidden
tests and visible checks both refuse it). Everything runs in a copy of the course under tmp_path."""

import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI
from traitlets.config.loader import PyFileConfigLoader

from mamlkit.course import homework, project

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")  # nbgrader 0.9.6 on SQLAlchemy 2.1
HOMEWORK = Path(__file__).resolve().parents[1] / "homework"
SOURCES = sorted((HOMEWORK / "_src").glob("hw*.py"))
ASSIGNMENTS = [s.stem for s in SOURCES]
GENERATED = ("release", "submitted", "autograded", "feedback", "gradebook.db", ".nbgrader.log")
SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


def source_notebook(root: Path, name: str) -> Path:
    return root / "source" / name / f"{name}.ipynb"


def read(path: Path):
    return nbformat.read(path, as_version=4)


def kind(cell) -> str:
    meta = cell.metadata.get("nbgrader", {})
    return "tests" if meta.get("grade") else "answer" if meta.get("solution") else "locked"


def test_assignments_exist():
    assert ASSIGNMENTS == ["hw1_meta_sgd", "hw2_meta_gradient", "hw3_first_order_gap", "hw4_reptile_adam",
                           "hw5_project_quadratics"]


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_source_notebook_in_sync_and_stripped(name):
    spec = importlib.util.spec_from_file_location("homework_build", HOMEWORK / "_build.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    built = builder.cells_from_source((HOMEWORK / "_src" / f"{name}.py").read_text(), name[:3])
    stored = read(source_notebook(HOMEWORK, name))
    nbformat.validate(stored)
    assert [(c.cell_type, c.source, c.metadata) for c in built] == \
        [(c.cell_type, c.source, c.metadata) for c in stored.cells], f"run python homework/_build.py {name}"
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "source notebooks are stored without outputs"
    ids = [c.metadata.nbgrader["grade_id"] for c in stored.cells]
    assert len(ids) == len(set(ids)), "grade_id must be unique"
    answers = [c for c in stored.cells if kind(c) == "answer"]
    tests = [c for c in stored.cells if kind(c) == "tests"]
    assert answers and len(tests) == len(answers)
    assert all(SOLUTION.search(c.source) for c in answers)
    assert all(HIDDEN.search(c.source) and c.metadata.nbgrader["points"] > 0 for c in tests)
    assert all(re.match(r"assert \w+\.check_\w+\(", c.source) for c in tests), "each test starts with a visible check"


# --- the checkers against the instructor's solutions, in this process ---------------------------

def solutions(name: str) -> dict:
    """The setup cell and the answer cells of an assignment's source, executed: its reference solutions."""
    namespace = {}
    for cell in read(source_notebook(HOMEWORK, name)).cells:
        if cell.cell_type == "code" and kind(cell) != "tests" and "project.run(" not in cell.source:
            exec(cell.source, namespace)
    return namespace


@pytest.fixture(scope="module")
def solved():
    return {name: solutions(name) for name in ASSIGNMENTS}


def one_line(check, answer, capsys):
    ok = check(answer)
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and "Traceback" not in out, out
    return ok, out.strip()


CHECKS = [("hw1_meta_sgd", homework.check_meta_sgd_update, "meta_sgd_update"),
          ("hw1_meta_sgd", homework.check_alpha_meta_gradient, "alpha_meta_gradient"),
          ("hw1_meta_sgd", homework.check_meta_sgd_outer_step, "meta_sgd_outer_step"),
          ("hw2_meta_gradient", homework.check_meta_gradient_linear_steps, "meta_gradient_linear"),
          ("hw2_meta_gradient", homework.check_multi_step_loss, "multi_step_loss"),
          ("hw3_first_order_gap", homework.check_maml_and_fomaml_gradients, "maml_and_fomaml_gradients"),
          ("hw3_first_order_gap", homework.check_first_order_gap, "first_order_gap"),
          ("hw4_reptile_adam", homework.check_adam_adapt, "adam_adapt"),
          ("hw4_reptile_adam", homework.check_reptile_adam_step, "reptile_step"),
          ("hw5_project_quadratics", project.check_quadratic_tasks, "quadratic_tasks")]


@pytest.mark.parametrize("name, check, function", CHECKS, ids=[c[2] for c in CHECKS])
def test_solution_passes_its_checker(name, check, function, solved, capsys):
    ok, line = one_line(check, solved[name][function], capsys)
    assert ok is True and line.startswith("✔"), line


# --- submissions that call the library's own implementation of the graded function ---------------

CHEATS = {  # assignment -> the answer cells, in order, each calling into mamlkit (or torch.optim) for the answer
    "hw1_meta_sgd": [
        "def meta_sgd_update(model, params, alphas, x, y, loss_fn):\n"
        "    from mamlkit.inner import InnerLoop\n"
        "    return InnerLoop.sgd(alphas).adapt(model, loss_fn, params, x, y)[0]",
        "def alpha_meta_gradient(model, params, alphas, task, loss_fn):\n"
        "    from mamlkit.inner import InnerLoop\n"
        "    alphas = {k: v.detach().requires_grad_() for k, v in alphas.items()}\n"
        "    adapted = InnerLoop.sgd(alphas).adapt(model, loss_fn, params, task.x_support, task.y_support)[0]\n"
        "    loss = loss_fn(forward(model, adapted, task.x_query), task.y_query)\n"
        "    return dict(zip(alphas, torch.autograd.grad(loss, list(alphas.values()))))",
        "def meta_sgd_outer_step(model, params, alphas, tasks, loss_fn, outer_lr):\n"
        "    from mamlkit import maml\n"
        "    from mamlkit.inner import InnerLoop\n"
        "    leaves = [*params.values(), *alphas.values()]\n"
        "    for v in leaves:\n"
        "        v.grad = None\n"
        "    maml.meta_backward(model, params, tasks, loss_fn, InnerLoop.sgd(alphas))\n"
        "    return ({k: (v - outer_lr * v.grad).detach() for k, v in params.items()},\n"
        "            {k: (v - outer_lr * v.grad).detach() for k, v in alphas.items()})",
    ],
    "hw2_meta_gradient": [
        "def meta_gradient_linear(x_support, y_support, x_query, y_query, w, inner_lr, inner_steps):\n"
        "    from mamlkit import maml\n"
        "    model = torch.nn.Linear(len(w), 1, bias=False).to(w.dtype)\n"
        "    theta = {'weight': w.reshape(1, -1).clone().requires_grad_()}\n"
        "    task = tasks.Task(x_support[None], y_support[None, :, None], x_query[None], y_query[None, :, None])\n"
        "    loss = maml.maml_loss(model, theta, task, F.mse_loss, inner_lr, max(inner_steps, 1))\n"
        "    return torch.autograd.grad(loss, theta['weight'])[0].reshape(-1)",
        "def multi_step_loss(model, params, tasks, loss_fn, inner_lr, weights):\n"
        "    from mamlkit.inner import InnerLoop\n"
        "    total = 0.0\n"
        "    for task in tasks:\n"
        "        path = InnerLoop.sgd(inner_lr, len(weights)).trajectory(model, loss_fn, params, task.x_support,\n"
        "                                                                task.y_support)[0]\n"
        "        total = total + sum(v * loss_fn(forward(model, p, task.x_query), task.y_query)\n"
        "                            for v, p in zip(weights, path[1:]))\n"
        "    return total / len(tasks)",
    ],
    "hw3_first_order_gap": [
        "def maml_and_fomaml_gradients(model, params, task, loss_fn, inner_lr, inner_steps):\n"
        "    from mamlkit import maml\n"
        "    out = []\n"
        "    for first_order in (False, True):\n"
        "        loss = maml.maml_loss(model, params, [task], loss_fn, inner_lr, inner_steps, first_order)\n"
        "        out.append(dict(zip(params, torch.autograd.grad(loss, list(params.values())))))\n"
        "    return tuple(out)",
        "def first_order_gap(model, params, tasks, loss_fn, inner_lr, inner_steps):\n"
        "    from mamlkit import maml\n"
        "    g, f, cosine = maml.gradient_agreement(model, params, tasks, inner_lr, inner_steps, loss_fn)\n"
        "    return float((g - f).norm() / g.norm()), cosine",
    ],
    "hw4_reptile_adam": [
        "def adam_adapt(model, params, x, y, loss_fn, lr, inner_steps, inner_batch=None, betas=(0.0, 0.999),\n"
        "               eps=1e-8):\n"
        "    theta = {k: v.detach().clone().requires_grad_() for k, v in params.items()}\n"
        "    optimizer = torch.optim.Adam(theta.values(), lr=lr, betas=betas, eps=eps)\n"
        "    for s in range(inner_steps):\n"
        "        rows = slice(None) if inner_batch is None else slice(s * inner_batch, (s + 1) * inner_batch)\n"
        "        optimizer.zero_grad()\n"
        "        loss_fn(forward(model, theta, x[rows]), y[rows]).backward()\n"
        "        optimizer.step()\n"
        "    return {k: v.detach() for k, v in theta.items()}",
        "def reptile_step(model, params, tasks, loss_fn, inner_lr, inner_steps, inner_batch, outer_lr):\n"
        "    from mamlkit import reptile\n"
        "    from mamlkit.inner import Adam, InnerLoop\n"
        "    loop = InnerLoop(Adam(inner_lr), inner_steps, first_order=True, batch=inner_batch)\n"
        "    return reptile.reptile_step(model, params, tasks, loss_fn, loop, outer_lr=outer_lr)",
    ],
}


def cheat(name: str, function: str):
    """The cheating answer for ``function``, defined in the namespace of the assignment's set-up cell."""
    namespace = {}
    exec(read(source_notebook(HOMEWORK, name)).cells[1].source, namespace)
    for code in CHEATS[name]:
        exec(code, namespace)
    return namespace[function]


@pytest.mark.parametrize("name, check, function", CHECKS[:-1], ids=[c[2] for c in CHECKS[:-1]])
def test_a_call_into_the_library_fails_the_visible_check(name, check, function, capsys):
    answer = cheat(name, function)
    capsys.readouterr()  # what the set-up cell printed
    ok, line = one_line(check, answer, capsys)
    assert ok is False and line.startswith("✘ your function calls ") and "compute it itself" in line, line
    assert "mamlkit." in line or "torch.optim" in line, line


def hidden_tests(name: str) -> list[str]:
    """The hidden part of each test cell of an assignment's source."""
    return [HIDDEN.search(c.source).group(1) for c in read(source_notebook(HOMEWORK, name)).cells
            if kind(c) == "tests"]


@pytest.mark.parametrize("name", list(CHEATS))
def test_hidden_tests_alone_refuse_a_call_into_the_library(name):
    """Without the visible check: each hidden test passes the solutions and fails the cheating answer."""
    from mamlkit.course.homework import LibraryCall

    honest = solutions(name)
    for hidden, cheating in zip(hidden_tests(name), CHEATS[name], strict=True):
        exec(hidden, dict(honest))  # the solutions pass
        caught = dict(honest)
        exec(cheating, caught)  # one answer replaced by a call into the library
        with pytest.raises(LibraryCall, match="calls (mamlkit|torch.optim)"):
            exec(hidden, caught)


def test_the_guard_sees_aliases_and_allows_the_helpers():
    import functools

    import torch.nn.functional as F

    from mamlkit import maml
    from mamlkit import params as P
    from mamlkit.course import checks

    model, params, tasks = checks.setup()
    task = tasks[0]
    alias = maml.inner_update  # what `from mamlkit.maml import inner_update` binds
    bound = functools.partial(maml.adapt, inner_steps=2)
    for fn in (alias, bound):
        _, calls = homework.library_calls(fn, model, params, task.x_support, task.y_support, F.mse_loss, 0.1)
        assert calls and calls[0].startswith("mamlkit.maml."), calls

    def honest(model, params, x, y):  # forward, the parameter helpers and torch: allowed
        grads = torch.autograd.grad(F.mse_loss(P.forward(model, params, x), y), list(params.values()))
        return P.sub(params, P.scale(dict(zip(params, grads)), 0.1))

    result, calls = homework.library_calls(honest, model, params, task.x_support, task.y_support)
    assert calls == [] and set(result) == set(params)


def _no_graph(update):
    """``update`` (Meta-SGD's inner step) with the gradient taken as a constant: a first-order mistake."""
    def step(model, params, alphas, x, y, loss_fn):
        from mamlkit.params import forward

        grads = torch.autograd.grad(loss_fn(forward(model, params, x), y), list(params.values()))
        return {k: p - alphas[k] * g for (k, p), g in zip(params.items(), grads)}
    return step


def _with(function, **names):
    """``function`` with some global names of its notebook replaced (e.g. the helper it calls)."""
    import types

    return types.FunctionType(function.__code__, {**function.__globals__, **names}, function.__name__,
                              function.__defaults__)


def _adam(model, params, x, y, loss_fn, lr, steps, batch, betas, eps, bias=True, eps_inside=False, sgd=False):
    """Adam written out for the wrong answers (plain loops, float64)."""
    from mamlkit.params import forward

    (b1, b2), phi = betas, {k: v.detach() for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in phi.items()}
    v2 = {k: torch.zeros_like(v) for k, v in phi.items()}
    for t in range(1, steps + 1):
        rows = slice(None) if batch is None else slice((t - 1) * batch, t * batch)
        phi = {k: v.requires_grad_() for k, v in phi.items()}
        grads = torch.autograd.grad(loss_fn(forward(model, phi, x[rows]), y[rows]), list(phi.values()))
        new = {}
        for (k, p), g in zip(phi.items(), grads):
            m[k], v2[k] = b1 * m[k] + (1 - b1) * g, b2 * v2[k] + (1 - b2) * g * g
            mh, vh = (m[k] / (1 - b1 ** t), v2[k] / (1 - b2 ** t)) if bias else (m[k], v2[k])
            step = g if sgd else mh / ((vh + eps).sqrt() if eps_inside else vh.sqrt() + eps)
            new[k] = (p - lr * step).detach()
        phi = new
    return phi


def _wrong_answers(solved):
    import torch.nn.functional as F

    from mamlkit.params import forward
    from mamlkit.tasks import Task

    hw1, hw2, hw3, hw4 = (solved[n] for n in ASSIGNMENTS[:4])
    update, alpha_grad, outer = hw1["meta_sgd_update"], hw1["alpha_meta_gradient"], hw1["meta_sgd_outer_step"]
    linear, msl = hw2["meta_gradient_linear"], hw2["multi_step_loss"]
    both, gap = hw3["maml_and_fomaml_gradients"], hw3["first_order_gap"]
    adam, step = hw4["adam_adapt"], hw4["reptile_step"]
    quadratic = solved["hw5_project_quadratics"]["quadratic_tasks"]
    detach = lambda d: {k: v.detach() for k, v in d.items()}
    flat = lambda d, like: torch.cat([d[k].reshape(-1) for k in like])

    def mean_alpha(model, params, alphas, x, y, loss_fn):
        mean = torch.cat([a.reshape(-1) for a in alphas.values()]).mean()
        return update(model, params, {k: mean * torch.ones_like(a) for k, a in alphas.items()}, x, y, loss_fn)

    def query_grad_at_theta(model, params, alphas, task, loss_fn):
        g_s = torch.autograd.grad(loss_fn(forward(model, params, task.x_support), task.y_support),
                                  list(params.values()))
        g_q = torch.autograd.grad(loss_fn(forward(model, params, task.x_query), task.y_query), list(params.values()))
        return {k: -a * b for k, a, b in zip(params, g_s, g_q)}

    def theta_grad(model, params, alphas, task, loss_fn):
        adapted = update(model, params, alphas, task.x_support, task.y_support, loss_fn)
        loss = loss_fn(forward(model, adapted, task.x_query), task.y_query)
        return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))

    def linear_variant(x_s, y_s, x_q, y_q, w, lr, k, factors, at_start=False):
        grad = lambda x, y, v: 2 / len(x) * x.T @ (x @ v - y)
        adapted = w
        for _ in range(0 if at_start else k):
            adapted = adapted - lr * grad(x_s, y_s, adapted)
        jacobian = torch.eye(len(w), dtype=w.dtype) - lr * 2 / len(x_s) * x_s.T @ x_s
        return torch.linalg.matrix_power(jacobian, factors) @ grad(x_q, y_q, adapted)

    def msl_variant(model, params, tasks, loss_fn, lr, weights, offset=1, graph=True):
        total = 0.0
        for task in tasks:
            path = [params]
            for _ in weights:
                loss = loss_fn(forward(model, path[-1], task.x_support), task.y_support)
                grads = torch.autograd.grad(loss, list(path[-1].values()), create_graph=graph)
                path.append({k: p - lr * g for (k, p), g in zip(path[-1].items(), grads)})
            total = total + sum(v * loss_fn(forward(model, path[j + offset], task.x_query), task.y_query)
                                for j, v in enumerate(weights))
        return total / len(tasks)

    def fomaml_at_theta(model, params, task, loss_fn, lr, k):
        loss = loss_fn(forward(model, params, task.x_query), task.y_query)
        return both(model, params, task, loss_fn, lr, k)[0], dict(zip(params, torch.autograd.grad(
            loss, list(params.values()))))

    def gap_variant(model, params, tasks, loss_fn, lr, k, relative_to=0, per_task=False):
        g = [torch.stack([flat(both(model, params, t, loss_fn, lr, k)[i], params) for t in tasks]) for i in (0, 1)]
        if per_task:
            return (float(((g[0] - g[1]).norm(dim=1) / g[0].norm(dim=1)).mean()),
                    float(F.cosine_similarity(g[0], g[1], dim=1).mean()))
        m = [v.mean(0) for v in g]
        return float((m[0] - m[1]).norm() / m[relative_to].norm()), float(F.cosine_similarity(m[0], m[1], dim=0))

    def adam_reset(model, params, x, y, loss_fn, lr, k, b, betas, eps):
        for s in range(k):
            rows = slice(None) if b is None else slice(s * b, (s + 1) * b)
            params = adam(model, params, x[rows], y[rows], loss_fn, lr, 1, None, betas, eps)
        return params

    def moved(fn, factor):  # θ + factor × (fn(…) − θ)
        def run(model, params, *args):
            new = fn(model, params, *args)
            return {k: (params[k] + factor * (new[k] - params[k])).detach() for k in params}
        return run

    def outer_moved(which):  # meta_sgd_outer_step, keeping θ (which=0) or α (which=1) where they were
        def run(model, params, alphas, *args):
            new = list(outer(model, params, alphas, *args))
            new[which] = detach((params, alphas)[which])
            return tuple(new)
        return run

    return [
        # hw1: Meta-SGD
        (homework.check_meta_sgd_update, moved(update, -1), "wrong sign"),
        (homework.check_meta_sgd_update, mean_alpha, "one step size"),
        (homework.check_meta_sgd_update, lambda *a: detach(update(*a)), "cut from the graph"),
        (homework.check_meta_sgd_update, lambda m, p, al, *a: update(m, p, detach(al), *a), "α is not in the graph"),
        (homework.check_meta_sgd_update, _no_graph(update), "create_graph=True"),
        (homework.check_alpha_meta_gradient, lambda *a: {k: -v for k, v in alpha_grad(*a).items()}, "wrong sign"),
        (homework.check_alpha_meta_gradient, query_grad_at_theta, "at θ′"),
        (homework.check_alpha_meta_gradient, theta_grad, "meta-gradient w.r.t. θ"),
        (homework.check_meta_sgd_outer_step, outer_moved(1), "α did not move"),
        (homework.check_meta_sgd_outer_step, outer_moved(0), "θ did not move"),
        (homework.check_meta_sgd_outer_step, lambda m, p, al, t, f, b: outer(m, p, al, t, f, -b), "wrong sign"),
        (homework.check_meta_sgd_outer_step, lambda m, p, al, t, f, b: outer(m, p, al, t, f, b * len(t)),
         "you summed"),
        (homework.check_meta_sgd_outer_step, _with(outer, meta_sgd_update=_no_graph(update)), "Hessian term"),
        # hw2: the k-step meta-gradient, the multi-step loss
        (homework.check_meta_gradient_linear_steps, lambda *a: linear_variant(*a, factors=0), "First-Order MAML"),
        (homework.check_meta_gradient_linear_steps, lambda *a: linear_variant(*a, factors=1), "one factor"),
        (homework.check_meta_gradient_linear_steps, lambda *a: linear_variant(*a, factors=a[-1], at_start=True),
         "at w_k"),
        (homework.check_meta_gradient_linear_steps, lambda *a: linear(*a[:-1], 1), "1 inner step"),
        (homework.check_meta_gradient_linear_steps, lambda *a: linear(*a[:-1], max(a[-1], 1)), "inner_steps = 0"),
        (homework.check_multi_step_loss, lambda *a: msl_variant(*a, offset=0), "weights[0] goes with θ_1"),
        (homework.check_multi_step_loss, lambda *a: msl(*a[:-1], [0.0] * (len(a[-1]) - 1) + [1.0]),
         "only the last step"),
        (homework.check_multi_step_loss, lambda *a: msl(*a[:-1], [0.0] * (len(a[-1]) - 1) + [a[-1][-1]]),
         "times weights[-1]"),
        (homework.check_multi_step_loss, lambda *a: msl(*a) * len(a[2]), "you summed"),
        (homework.check_multi_step_loss, lambda *a: msl(*a).detach(), "cut from the graph"),
        (homework.check_multi_step_loss, lambda *a: msl_variant(*a, graph=False), "create_graph=True"),
        (homework.check_multi_step_loss, lambda *a: msl(*a).reshape(1), "0-d tensor"),
        # hw3: the first-order gap
        (homework.check_maml_and_fomaml_gradients, lambda *a: both(*a)[::-1], "swapped"),
        (homework.check_maml_and_fomaml_gradients, lambda *a: (both(*a)[1],) * 2, "first-order gradient"),
        (homework.check_maml_and_fomaml_gradients, fomaml_at_theta, "g_fomaml: take the query gradient after"),
        (homework.check_maml_and_fomaml_gradients, lambda *a: both(*a[:-1], 1), "g_maml: you took 1 inner step"),
        (homework.check_first_order_gap, lambda *a: gap(*a)[::-1], "swapped"),
        (homework.check_first_order_gap, lambda *a: gap_variant(*a, relative_to=1), "not by ‖ḡ_FO‖"),
        (homework.check_first_order_gap, lambda *a: gap_variant(*a, per_task=True), "average the gradients"),
        # hw4: Adam on mini-batches, Reptile
        (homework.check_adam_adapt, lambda *a: _adam(*a, sgd=True), "plain SGD"),
        (homework.check_adam_adapt, adam_reset, "restart every step"),
        (homework.check_adam_adapt, lambda *a: _adam(*a, bias=False), "bias correction"),
        (homework.check_adam_adapt, lambda *a: _adam(*a, eps_inside=True), "outside the square root"),
        (homework.check_adam_adapt, lambda m, p, x, y, f, lr, k, b, *r: adam(m, p, x, y, f, lr, k, None, *r),
         "every step used all of (x, y)"),
        (homework.check_adam_adapt, moved(adam, -1), "wrong sign"),
        (homework.check_reptile_adam_step, lambda *a: step(*a[:-1], 1.0), "all the way"),
        (homework.check_reptile_adam_step, lambda *a: step(*a[:-1], -a[-1]), "wrong sign"),
        (homework.check_reptile_adam_step, lambda *a: step(*a[:-1], a[-1] * len(a[2])), "you summed"),
        (homework.check_reptile_adam_step, lambda *a: step(*a[:-2], None, a[-1]), "pass inner_batch on"),
        # hw5: the project's task family
        (project.check_quadratic_tasks, lambda *a: Task(*(v.double() for v in quadratic(*a).tensors())),
         "torch.float64"),
        (project.check_quadratic_tasks, lambda n, s, q, g: quadratic(n, s, q, None), "the same seed"),
        (project.check_quadratic_tasks, lambda n, s, q, g: quadratic(n, q, s, g), "shape"),
    ]


def test_wrong_answers_get_specific_hints(solved, capsys):
    for check, wrong, hint in _wrong_answers(solved):
        ok, line = one_line(check, wrong, capsys)
        assert ok is False and line.startswith("✘") and hint in line, (check.__name__, line)


def test_project_feedback(solved, capsys):
    hyper = solved["hw5_project_quadratics"]["hyperparameters"]()
    assert project.validate_hyperparameters(hyper) == hyper
    ok, line = one_line(project.check_meta_trained, None, capsys)
    assert not ok and "no meta-trained model" in line

    def stub():
        raise NotImplementedError

    assert project.run(solved["hw5_project_quadratics"]["quadratic_tasks"], stub) is None
    assert capsys.readouterr().out.startswith("✘ not implemented yet")
    over = dict(hyper, meta_steps=10_000)
    assert project.run(solved["hw5_project_quadratics"]["quadratic_tasks"], lambda: over) is None
    assert "over the budget" in capsys.readouterr().out


# --- nbgrader: generate the student version, execute it, autograde ----------------------------

def nbgrader_api(root: Path) -> NbGraderAPI:
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    return NbGraderAPI(config=config)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A copy of homework/ with every student version generated into release/."""
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(HOMEWORK, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*GENERATED, "__pycache__"))
    with pytest.MonkeyPatch.context() as mp:
        # nbgrader runs the `alembic` command of its environment to set up the gradebook
        mp.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        mp.chdir(root)
        api = nbgrader_api(root)
        for name in ASSIGNMENTS:
            result = api.generate_assignment(name)
            assert result["success"], result.get("error", "") + result.get("log", "")
        yield root, api


def lines_only_in_regions(source: str, pattern: re.Pattern) -> set:
    """The lines of the marked regions that occur nowhere else in the notebook's text."""
    inside = {ln.strip() for region in pattern.findall(source) for ln in region.splitlines()}
    outside = {ln.strip() for ln in pattern.sub("", source).splitlines()}
    return {ln for ln in inside - outside if ln}


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_student_version_has_no_solutions_nor_hidden_tests(course, name):
    root, _ = course
    source = "\n".join(c.source for c in read(source_notebook(root, name)).cells)
    student = read(root / "release" / name / f"{name}.ipynb")
    text = "\n".join(c.source for c in student.cells)
    for pattern in (SOLUTION, HIDDEN):
        secret = lines_only_in_regions(source, pattern)
        assert secret, "every assignment has solutions and hidden tests"
        leaked = sorted(ln for ln in secret if ln in text)
        assert not leaked, f"{name}: the student version shows {leaked[:3]}"
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert all("raise NotImplementedError()" in c.source for c in student.cells if kind(c) == "answer")


def execute(path: Path) -> nbformat.NotebookNode:
    nb = read(path)
    # cells tagged raises-exception (the test cells) may fail; any other error fails the test here
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_student_version_runs_to_the_end_with_readable_feedback(course, name):
    root, _ = course
    nb = execute(root / "release" / name / f"{name}.ipynb")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every cell ran"
    for cell in code:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if kind(cell) == "tests":
            assert [e.ename for e in errors] == ["AssertionError"]
            lines = stdout(cell).strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("✘ ") and "Traceback" not in lines[0], lines
        else:
            assert not errors
    assert "✘ not implemented yet" in stdout(code[2])


def submit(root: Path, student: str, name: str, nb) -> None:
    folder = root / "submitted" / student / name
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name}.ipynb")


SINE_SETTINGS = "dict(inner_lr=0.01, inner_steps=1, outer_lr=0.001, meta_steps=200, meta_batch_size=10)"
PARTIAL = {  # the answer cells of a partial submission: index -> "solution" or the code handed in
    "hw1_meta_sgd": {0: "solution", 1: "def alpha_meta_gradient(model, params, alphas, task, loss_fn):\n"
                                       "    support = loss_fn(forward(model, params, task.x_support), task.y_support)\n"
                                       "    g_s = torch.autograd.grad(support, list(params.values()))\n"
                                       "    adapted = {k: (p - alphas[k] * g).detach().requires_grad_()\n"
                                       "               for (k, p), g in zip(params.items(), g_s)}\n"
                                       "    query = loss_fn(forward(model, adapted, task.x_query), task.y_query)\n"
                                       "    g_q = torch.autograd.grad(query, list(adapted.values()))\n"
                                       "    return {k: a * b for k, a, b in zip(params, g_s, g_q)}  # sign"},
    "hw5_project_quadratics": {0: "solution", 1: f"def hyperparameters():\n    return {SINE_SETTINGS}"},
}


def partial(root: Path, name: str):
    """The student version with the first exercise solved and a wrong answer to the second."""
    student, source = read(root / "release" / name / f"{name}.ipynb"), read(source_notebook(root, name))
    answers = [i for i, c in enumerate(student.cells) if kind(c) == "answer"]
    for k, code in PARTIAL[name].items():
        student.cells[answers[k]].source = source.cells[answers[k]].source if code == "solution" else code
    return student


def cheating(root: Path, name: str):
    """The student version with every answer calling the library (CHEATS), except hw1's first: honest."""
    student, source = read(root / "release" / name / f"{name}.ipynb"), read(source_notebook(root, name))
    answers = [i for i, c in enumerate(student.cells) if kind(c) == "answer"]
    for k, code in enumerate(CHEATS[name]):
        honest = name == "hw1_meta_sgd" and k == 0
        student.cells[answers[k]].source = source.cells[answers[k]].source if honest else code
    return student


def students(name: str) -> list[str]:
    """alice hands in the solutions, bob a partial submission, carol answers that call the library."""
    return ["alice"] + ["bob"] * (name in PARTIAL) + ["carol"] * (name in CHEATS)


LOGS = {}  # (assignment, student) -> what nbgrader autograde logged


@pytest.fixture(scope="module")
def graded(course):
    """Autograde alice, bob and carol (see ``students``): scores per test cell, and nbgrader's logs."""
    root, api = course
    logs = LOGS
    for name in ASSIGNMENTS:
        submit(root, "alice", name, read(source_notebook(root, name)))
        if name in PARTIAL:
            submit(root, "bob", name, partial(root, name))
        if name in CHEATS:
            submit(root, "carol", name, cheating(root, name))
        for student in students(name):
            result = api.autograde(name, student)
            assert result["success"], result.get("error", "") + result.get("log", "")
            logs[name, student] = result.get("log", "")
    scores = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for name in ASSIGNMENTS:
            for student in students(name):
                grades = gradebook.find_submission_notebook(name, name, student).grades
                scores[name, student] = {g.name: (g.score, g.max_score) for g in grades}
    return root, scores


@pytest.mark.parametrize("name", list(CHEATS))
def test_the_checksum_warning_names_exactly_the_test_cells(graded, name):
    """homework/README.md: a submission made from the student version makes nbgrader warn "Attribute 'checksum'
    for cell … has changed!" for each test cell (its hidden tests were stripped, autograde puts them back)
    and for no other cell."""
    root, _ = graded
    warned = set(re.findall(r"Attribute 'checksum' for cell (\S+) has changed!", graded_logs(name, "carol")))
    tests = {c.metadata.nbgrader["grade_id"] for c in read(source_notebook(root, name)).cells if kind(c) == "tests"}
    assert warned == tests
    assert "has changed" not in graded_logs(name, "alice"), "the instructor's own notebook matches the gradebook"


def graded_logs(name: str, student: str) -> str:
    return LOGS[name, student]


@pytest.mark.parametrize("name", list(CHEATS))
def test_autograde_gives_a_call_into_the_library_no_points(graded, name):
    """carol's answers call the library's implementation: 0 for each such cell, with a one-line reason;
    hw1's honest first answer keeps its points."""
    root, scores = graded
    grades = scores[name, "carol"]
    tests = [c.metadata.nbgrader["grade_id"] for c in read(source_notebook(root, name)).cells if kind(c) == "tests"]
    nb = read(root / "autograded" / "carol" / name / f"{name}.ipynb")
    feedback = {c.metadata.nbgrader["grade_id"]: stdout(c).strip() for c in nb.cells if kind(c) == "tests"}
    for k, test in enumerate(tests):
        if name == "hw1_meta_sgd" and k == 0:
            assert grades[test][0] == grades[test][1] > 0 and feedback[test].startswith("✔ "), feedback[test]
        else:
            assert grades[test][0] == 0, (test, grades[test])
            assert feedback[test].startswith("✘ your function calls "), feedback[test]


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_autograde_gives_the_solutions_full_points(graded, name):
    _, scores = graded
    grades = scores[name, "alice"]
    assert grades and all(score == points > 0 for score, points in grades.values()), grades
    nb = read(graded[0] / "autograded" / "alice" / name / f"{name}.ipynb")  # executed by nbgrader (nbconvert)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert all(stdout(c).startswith("✔ ") for c in nb.cells if kind(c) == "tests")


@pytest.mark.parametrize("name", PARTIAL)
def test_autograde_gives_a_partial_submission_partial_points(graded, name):
    root, scores = graded
    grades = scores[name, "bob"]
    tests = [c.metadata.nbgrader["grade_id"] for c in read(source_notebook(root, name)).cells if kind(c) == "tests"]
    assert grades[tests[0]][0] == grades[tests[0]][1] > 0, "the solved exercise gets its points"
    assert grades[tests[1]][0] == 0, "the wrong answer gets none"
    assert 0 < sum(s for s, _ in grades.values()) < sum(p for _, p in grades.values())
    nb = read(root / "autograded" / "bob" / name / f"{name}.ipynb")
    feedback = next(stdout(c) for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == tests[1])
    expected = {"hw1_meta_sgd": "✘ wrong sign: θ′ = θ − α ⊙ g, so ∂θ′/∂α = −g",
                "hw5_project_quadratics": "✘ MSE after 1 inner step(s) on 100 validation quadratics"}
    assert feedback.startswith(expected[name]) and len(feedback.strip().splitlines()) == 1, feedback
