"""Every reference solution passes its checker; every checker rejects typical wrong answers, a
function that raises, and the wrong type or shape, each with one readable line."""

import math
import re
from pathlib import Path

import pytest
import solutions  # instructor/solutions.py (tests/conftest.py puts instructor/ on sys.path)
import torch

from mamlkit import params as P
from mamlkit.course import checks
from mamlkit.params import forward

SOLVED = [
    (checks.check_notation, solutions.NOTATION),
    (checks.check_sine, solutions.sine),
    (checks.check_inner_update, solutions.inner_update),
    (checks.check_adapt, solutions.adapt),
    (checks.check_meta_gradient_linear, solutions.meta_gradient_linear),
    (checks.check_meta_loss, solutions.meta_loss),
    (checks.check_ci95, solutions.ci95),
    (checks.check_first_order, solutions.first_order_gradient),
    (checks.check_reptile_update, solutions.reptile_update),
    (checks.check_significant, solutions.significant),
]
FUNCTION_CHECKS = [c for c, _ in SOLVED if c is not checks.check_notation]


def run_check(check, answer, capsys):
    ok = check(answer)
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {out!r}"
    assert "Traceback" not in out
    return ok, lines[0]


@pytest.mark.parametrize("check, solution", SOLVED, ids=lambda v: getattr(v, "__name__", "notation"))
def test_solution_passes(check, solution, capsys):
    ok, line = run_check(check, solution, capsys)
    assert ok is True and line.startswith("✔"), line


# --- typical wrong answers -------------------------------------------------------------------

def _step(model, params, x, y, loss_fn, inner_lr, sign=-1, create_graph=True, detach=False):
    grads = torch.autograd.grad(loss_fn(forward(model, params, x), y), list(params.values()),
                                create_graph=create_graph)
    out = {k: v + sign * inner_lr * g for (k, v), g in zip(params.items(), grads)}
    return {k: v.detach() for k, v in out.items()} if detach else out


def inner_wrong_sign(model, params, x, y, loss_fn, inner_lr):
    return _step(model, params, x, y, loss_fn, inner_lr, sign=+1)


def inner_no_create_graph(model, params, x, y, loss_fn, inner_lr):
    return _step(model, params, x, y, loss_fn, inner_lr, create_graph=False)


def inner_detached(model, params, x, y, loss_fn, inner_lr):
    return _step(model, params, x, y, loss_fn, inner_lr, detach=True)


def inner_wrong_shape(model, params, x, y, loss_fn, inner_lr):
    return {k: v.reshape(-1) for k, v in solutions.inner_update(model, params, x, y, loss_fn, inner_lr).items()}


def inner_list(model, params, x, y, loss_fn, inner_lr):
    return list(solutions.inner_update(model, params, x, y, loss_fn, inner_lr).values())


def inner_in_place(model, params, x, y, loss_fn, inner_lr):
    with torch.no_grad():
        for v in params.values():
            v.mul_(1.01)
    return solutions.inner_update(model, params, x, y, loss_fn, inner_lr)


def adapt_one_step(model, params, x, y, loss_fn, inner_lr, inner_steps):
    return solutions.inner_update(model, params, x, y, loss_fn, inner_lr)


def inner_model_parameters(model, params, x, y, loss_fn, inner_lr):
    """Runs the model with its own parameters and differentiates those, not the dict it was given."""
    grads = torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()), create_graph=True)
    return {k: v - inner_lr * g for (k, v), g in zip(params.items(), grads)}


def inner_model_call(model, params, x, y, loss_fn, inner_lr):
    """Runs ``model(x)`` but differentiates the dict: the loss does not depend on it."""
    grads = torch.autograd.grad(loss_fn(model(x), y), list(params.values()), create_graph=True)
    return {k: v - inner_lr * g for (k, v), g in zip(params.items(), grads)}


def inner_named_parameters(model, params, x, y, loss_fn, inner_lr):
    """Steps from the model's stored parameters instead of the dict."""
    own = dict(model.named_parameters())
    grads = torch.autograd.grad(loss_fn(model(x), y), list(own.values()), create_graph=True)
    return {k: v - inner_lr * g for (k, v), g in zip(own.items(), grads)}


def adapt_restarts_from_theta(model, params, x, y, loss_fn, inner_lr, inner_steps):
    """Every step starts again from θ instead of from the last θ′."""
    for _ in range(inner_steps):
        adapted = solutions.inner_update(model, params, x, y, loss_fn, inner_lr)
    return adapted


def adapt_gradient_at_theta(model, params, x, y, loss_fn, inner_lr, inner_steps):
    """Steps from the last θ′ but always with the gradient at θ."""
    grads = torch.autograd.grad(loss_fn(forward(model, params, x), y), list(params.values()), create_graph=True)
    adapted = dict(params)
    for _ in range(inner_steps):
        adapted = {k: v - inner_lr * g for (k, v), g in zip(adapted.items(), grads)}
    return adapted


def adapt_too_many(model, params, x, y, loss_fn, inner_lr, inner_steps):
    return solutions.adapt(model, params, x, y, loss_fn, inner_lr, inner_steps + 1)


def adapt_model_parameters(model, params, x, y, loss_fn, inner_lr, inner_steps):
    adapted = params
    for _ in range(inner_steps):
        grads = torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()), create_graph=True)
        adapted = {k: v - inner_lr * g for (k, v), g in zip(adapted.items(), grads)}
    return adapted


def adapt_first_order(model, params, x, y, loss_fn, inner_lr, inner_steps):
    for _ in range(inner_steps):
        params = _step(model, params, x, y, loss_fn, inner_lr, create_graph=False)
    return params


def _grad(x, y, w):
    return 2 / len(x) * x.T @ (x @ w - y)


def linear_first_order(x_s, y_s, x_q, y_q, w, lr):
    return _grad(x_q, y_q, w - lr * _grad(x_s, y_s, w))


def linear_plus(x_s, y_s, x_q, y_q, w, lr):
    h = 2 / len(x_s) * x_s.T @ x_s
    return (torch.eye(len(w), dtype=w.dtype) + lr * h) @ _grad(x_q, y_q, w - lr * _grad(x_s, y_s, w))


def linear_column(*args):
    return solutions.meta_gradient_linear(*args).reshape(-1, 1)


def meta_loss_summed(model, params, tasks, loss_fn, inner_lr):
    return solutions.meta_loss(model, params, tasks, loss_fn, inner_lr) * len(tasks)


def meta_loss_first_order(model, params, tasks, loss_fn, inner_lr):
    losses = [loss_fn(forward(model, _step(model, params, t.x_support, t.y_support, loss_fn, inner_lr,
                                            create_graph=False), t.x_query), t.y_query) for t in tasks]
    return torch.stack(losses).mean()


def meta_loss_at_theta(model, params, tasks, loss_fn, inner_lr):
    return torch.stack([loss_fn(forward(model, params, t.x_query), t.y_query) for t in tasks]).mean()


def meta_loss_detached(model, params, tasks, loss_fn, inner_lr):
    return solutions.meta_loss(model, params, tasks, loss_fn, inner_lr).detach()


def meta_loss_float(model, params, tasks, loss_fn, inner_lr):
    return solutions.meta_loss(model, params, tasks, loss_fn, inner_lr).item()


def ci_no_sqrt(e):
    return float(e.mean()), float(1.96 * e.std())


def ci_biased(e):
    return float(e.mean()), float(1.96 * e.std(unbiased=False) / len(e) ** 0.5)


def ci_single(e):
    return float(e.mean())


def fo_second_order(model, params, task, loss_fn, inner_lr):
    adapted = solutions.inner_update(model, params, task.x_support, task.y_support, loss_fn, inner_lr)
    loss = loss_fn(forward(model, adapted, task.x_query), task.y_query)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def fo_negative(*args):
    return {k: -v for k, v in solutions.first_order_gradient(*args).items()}


def fo_at_theta(model, params, task, loss_fn, inner_lr):
    loss = loss_fn(forward(model, params, task.x_query), task.y_query)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def reptile_sign(params, adapted, eps):
    return P.lerp(params, P.mean(adapted), -eps)


def reptile_summed(params, adapted, eps):
    return {k: v + eps * sum(phi[k] - v for phi in adapted) for k, v in params.items()}


def reptile_all_the_way(params, adapted, eps):
    return P.mean(adapted)


def reptile_first_task(params, adapted, eps):
    return P.lerp(params, adapted[0], eps)


def reptile_in_place(params, adapted, eps):
    new = solutions.reptile_update(params, adapted, eps)
    for k, v in params.items():
        v.copy_(new[k])
    return new


def significant_inverted(*args):
    return not solutions.significant(*args)


def significant_overlap(a, b):
    """The wrong rule 04 and 07 used to teach: significant when the two 95% intervals do not overlap."""
    ci = [1.96 * e.std() / math.sqrt(len(e)) for e in (a, b)]
    return bool(abs(a.mean() - b.mean()) > ci[0] + ci[1])


def significant_unpaired(a, b):
    ci = [1.96 * e.std() / math.sqrt(len(e)) for e in (a, b)]
    return bool(abs(a.mean() - b.mean()) > math.hypot(*ci))


def significant_no_sqrt(a, b):
    d = a - b
    return bool(abs(d.mean()) > 1.96 * d.std())


def significant_one_sided(a, b):
    d = a - b
    return bool(d.mean() + 1.96 * d.std() / math.sqrt(len(d)) < 0)


def significant_string(*args):
    return "yes" if solutions.significant(*args) else "no"


WRONG = [
    (checks.check_notation, {**solutions.NOTATION, "θ": "weights"}, "1 of 6 names are not right yet (θ)"),
    (checks.check_notation, {**solutions.NOTATION, "θ": "params"}, "`params` is the module"),
    (checks.check_sine, lambda x, a, p: a * torch.sin(x + p), "sign of the phase"),
    (checks.check_sine, lambda x, a, p: a * torch.sin(x - p).reshape(-1), "shape"),
    (checks.check_inner_update, inner_wrong_sign, "wrong sign"),
    (checks.check_inner_update, inner_no_create_graph, "create_graph=True"),
    (checks.check_inner_update, inner_detached, "cut from the graph"),
    (checks.check_inner_update, inner_wrong_shape, "shape"),
    (checks.check_inner_update, inner_list, "should be a dict"),
    (checks.check_inner_update, inner_in_place, "in place"),
    (checks.check_inner_update, inner_model_parameters, "differentiate w.r.t. `theta` and run the model with the dict"),
    (checks.check_inner_update, inner_model_call, "differentiate w.r.t. `theta` and run the model with the dict"),
    (checks.check_inner_update, inner_named_parameters, "differentiate w.r.t. `theta` and run the model with the dict"),
    (checks.check_adapt, adapt_one_step, "each step starts from the last θ′"),
    (checks.check_adapt, adapt_restarts_from_theta, "each step starts from the last θ′"),
    (checks.check_adapt, adapt_gradient_at_theta, "each step starts from the last θ′"),
    (checks.check_adapt, adapt_too_many, "loop range(inner_steps)"),
    (checks.check_adapt, adapt_model_parameters, "run the model with the dict"),
    (checks.check_adapt, adapt_first_order, "second-order"),
    (checks.check_meta_gradient_linear, linear_first_order, "dropped the Hessian"),
    (checks.check_meta_gradient_linear, linear_plus, "wrong sign of the Hessian"),
    (checks.check_meta_gradient_linear, linear_column, "shape"),
    (checks.check_meta_loss, meta_loss_summed, "summed"),
    (checks.check_meta_loss, meta_loss_first_order, "create_graph=True"),
    (checks.check_meta_loss, meta_loss_at_theta, "at θ"),
    (checks.check_meta_loss, meta_loss_detached, "cut from the graph"),
    (checks.check_meta_loss, meta_loss_float, "torch.Tensor"),
    (checks.check_ci95, ci_no_sqrt, "√n"),
    (checks.check_ci95, ci_biased, "unbiased"),
    (checks.check_ci95, ci_single, "pair"),
    (checks.check_first_order, fo_second_order, "second-order"),
    (checks.check_first_order, fo_negative, "wrong sign"),
    (checks.check_first_order, fo_at_theta, "at θ"),
    (checks.check_reptile_update, reptile_sign, "wrong sign"),
    (checks.check_reptile_update, reptile_summed, "summed"),
    (checks.check_reptile_update, reptile_all_the_way, "scale the move by ε"),
    (checks.check_reptile_update, reptile_first_task, "only the first task"),
    (checks.check_reptile_update, reptile_in_place, "in place"),
    (checks.check_significant, significant_inverted, "0 lies outside mean ± ci"),
    (checks.check_significant, significant_overlap, "overlap"),
    (checks.check_significant, significant_unpaired, "independent samples"),
    (checks.check_significant, significant_no_sqrt, "√n"),
    (checks.check_significant, significant_one_sided, "either direction"),
    (checks.check_significant, significant_string, "True or False"),
]


@pytest.mark.parametrize("check, wrong, hint", WRONG, ids=[f"{c.__name__}-{h}" for c, _, h in WRONG])
def test_wrong_answer_rejected_with_hint(check, wrong, hint, capsys):
    ok, line = run_check(check, wrong, capsys)
    assert ok is False and line.startswith("✘"), line
    assert hint in line, line


@pytest.mark.parametrize("check", FUNCTION_CHECKS, ids=lambda c: c.__name__)
def test_stub_says_not_implemented(check, capsys):
    def stub(*args):
        raise NotImplementedError

    ok, line = run_check(check, stub, capsys)
    assert ok is False and line.startswith("✘ not implemented yet")


@pytest.mark.parametrize("check", FUNCTION_CHECKS, ids=lambda c: c.__name__)
def test_raising_function_reported_in_one_line(check, capsys):
    def broken(*args):
        raise KeyError("weight\nsecond line")

    ok, line = run_check(check, broken, capsys)
    assert ok is False and "your function raised KeyError" in line


@pytest.mark.parametrize("check", FUNCTION_CHECKS, ids=lambda c: c.__name__)
def test_wrong_type_reported(check, capsys):
    ok, line = run_check(check, lambda *args: None, capsys)
    assert ok is False and line.startswith("✘") and "NoneType" in line


@pytest.mark.parametrize("check", FUNCTION_CHECKS, ids=lambda c: c.__name__)
def test_not_a_function(check, capsys):
    ok, line = run_check(check, 42, capsys)
    assert ok is False and "expected a function, got int" in line


def test_notation_rejects_non_dict(capsys):
    ok, line = run_check(checks.check_notation, ["params"], capsys)
    assert ok is False and "expected a dict" in line


def test_python_math_on_tensors_gets_a_hint(capsys):
    import math

    ok, line = run_check(checks.check_sine, lambda x, a, p: a * math.sin(x - p), capsys)
    assert ok is False and "torch.sin" in line


def test_diagnose_gives_the_first_matching_hint():
    from mamlkit.course.feedback import Fail, diagnose

    table = {"skipped: cannot be told apart here": None, "doubled": torch.tensor([2.0, 4.0]),
             "also doubled, listed later": torch.tensor([2.0, 4.0]), "negated": torch.tensor([-1.0, -2.0])}
    with pytest.raises(Fail, match="^doubled$"):
        diagnose(torch.tensor([2.0, 4.0]), table)
    with pytest.raises(Fail, match="^negated$"):
        diagnose(torch.tensor([-1.0, -2.0]), table)
    diagnose(torch.tensor([1.0, 2.0]), table)  # the right answer matches no mistake
    with pytest.raises(Fail, match="^near$"):
        diagnose(1.0, {"near": 1.05}, compare=lambda a, b: abs(a - b) < 0.1)


NOTEBOOKS = Path(__file__).resolve().parents[1] / "course-src"
SYMBOL_IN_TABLE = {"θ": r"$\theta$", "θ′": r"$\theta'_i$", "α": r"$\alpha$", "β": r"$\beta$", "ε": r"$\varepsilon$",
                   "K": r"$K$"}


def test_notation_table_checker_and_notebooks_agree():
    """00's table, ``check_notation`` and the code the notebooks write use the same name for each symbol."""
    rows = [line.split("|") for line in (NOTEBOOKS / "00_welcome.py").read_text().splitlines()
            if line.startswith("# | $")]
    table = {re.match(r"\s*(\$[^$]*\$)", cells[1]).group(1): (re.findall(r"`([\w.]+)`", cells[3]) or [""])[0]
             for cells in rows}
    written = " ".join(p.read_text() for p in NOTEBOOKS.glob("0[1-8]_*.py"))
    for symbol, name in checks.NOTATION.items():
        assert table[SYMBOL_IN_TABLE[symbol]] == name, (symbol, table)
        assert re.search(rf"\b{name}\b", written), f"no notebook writes `{name}` ({symbol})"
    assert re.search(r"^theta = ", written, re.M), "the notebooks call θ `theta`"


@pytest.mark.parametrize("check, wrong", [
    (checks.check_inner_update, inner_model_parameters), (checks.check_inner_update, inner_named_parameters),
    (checks.check_adapt, adapt_restarts_from_theta), (checks.check_adapt, adapt_gradient_at_theta),
], ids=lambda v: v.__name__)
def test_hints_name_the_mistake_not_create_graph_or_the_loop(check, wrong, capsys):
    """Using the model's own parameters is not a missing create_graph=True; restarting every step from θ is
    not a wrong loop count."""
    ok, line = run_check(check, wrong, capsys)
    assert ok is False and "create_graph" not in line and "range(inner_steps)" not in line, line


def test_notation_check_does_not_give_the_answers_away(capsys):
    """Exercise 0.1: the check says how many names are wrong and what the symbol means, never a name."""
    names = set(checks.NOTATION.values())
    answer = {symbol: "?" for symbol in checks.NOTATION}
    for _ in range(len(checks.NOTATION)):  # running it again and again reveals nothing new
        ok, line = run_check(checks.check_notation, answer, capsys)
        assert ok is False and f"{len(checks.NOTATION)} of {len(checks.NOTATION)} names" in line, line
        assert not any(re.search(rf"\b{name}\b", line) for name in names), line
    half = {symbol: name if i % 2 else "?" for i, (symbol, name) in enumerate(checks.NOTATION.items())}
    ok, line = run_check(checks.check_notation, half, capsys)
    assert ok is False and "3 of 6 names" in line and "θ," in line and "α" in line, line
    assert checks.MEANING["θ"] in line and not any(re.search(rf"\b{name}\b", line) for name in names), line


def test_accuracy_argmax_over_the_wrong_dimension_is_named(capsys):
    from mamlkit.course import characters

    right = lambda logits, labels: (logits.argmax(-1) == labels).float().mean()  # noqa: E731
    ok, line = run_check(characters.check_accuracy, right, capsys)
    assert ok is True, line
    rows = lambda logits, labels: (logits.argmax(0) == labels).float().mean()  # noqa: E731
    ok, line = run_check(characters.check_accuracy, rows, capsys)
    assert ok is False and "dim=-1" in line and "ran over the rows" in line, line
    count = lambda logits, labels: (logits.argmax(-1) == labels).sum().float()  # noqa: E731
    ok, line = run_check(characters.check_accuracy, count, capsys)
    assert ok is False and "number of right rows" in line, line
