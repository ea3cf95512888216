"""Exercise checkers of the course notebooks: each runs the learner's function on small fixed inputs
against the library and prints ONE line, "✔ ..." or "✘ <what is wrong and a hint>" (the harness of
``feedback``), never a traceback; returns True/False. Where a checker knows the typical mistakes, it
lists them as one ``{hint: wrong_value}`` table for ``feedback.diagnose``.

Introduced in notebook 00_welcome (used at the end of every notebook).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import maml
from .. import params as P
from ..models import MLP
from ..tasks import sample_sine_tasks
from .feedback import Fail, call, checker, close, diagnose, expect_params, expect_tensor, expect_unchanged

# 00_welcome: the notation table, symbol -> name in code (notebook 00 shows it; not a secret)
NOTATION = {"θ": "theta", "θ′": "adapted", "α": "inner_lr", "β": "outer_lr", "ε": "outer_lr", "K": "shots"}


def setup(seed: int = 0, hidden: int = 8, tasks: int = 3, shots: int = 5, queries: int = 7):
    """A small float64 MLP, its parameters as fresh leaves, and a few sine tasks (checkers, hidden tests)."""
    torch.manual_seed(seed)
    model = MLP((1, hidden, hidden, 1), init="torch").double()
    params = P.detach(P.get_params(model), requires_grad=True)
    batch = sample_sine_tasks(tasks, shots, queries, torch.Generator().manual_seed(seed), dtype=torch.float64)
    return model, params, batch


def scrambled(model):
    """``model`` with its own stored parameters changed (in place): a learner's function that runs
    ``model(x)`` or differentiates ``model.parameters()`` instead of the dict it was given now gets other values."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-0.5).add_(0.1)
    return model


MODEL_NOT_DICT = ("you used the model's own parameters (model(x) or model.parameters()): differentiate w.r.t. "
                  "`theta` and run the model with the dict (params.forward / functional_call)")


def meta_grad(model, params, adapted, task) -> torch.Tensor:
    """∇_θ L_query(θ′) through whatever graph ``adapted`` carries (zeros where there is none)."""
    loss = F.mse_loss(P.forward(model, adapted, task.x_query), task.y_query)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params.values(), grads)])


# what each symbol means, for a hint that points to the concept without giving its name away
MEANING = {"θ": "the meta-parameters, the learned starting point (a dict of tensors)",
           "θ′": "the parameters adapted to one task", "α": "the inner step size",
           "β": "the outer step size of MAML and FOMAML", "ε": "the outer step size of Reptile",
           "K": "the number of support examples per task"}


@checker
def check_notation(mapping):
    """00: the notation table, symbol -> name in code. A wrong answer is told how many names are wrong and
    what the first wrong symbol means, never the name itself (so the check cannot be run for the answers)."""
    if not isinstance(mapping, dict):
        raise Fail(f"expected a dict symbol -> code name, got {type(mapping).__name__}")
    wrong = [symbol for symbol, name in NOTATION.items() if mapping.get(symbol) != name]
    if wrong:
        first = wrong[0]
        hint = (" (`params` is the module that handles such dicts, not the dict's name)"
                if first == "θ" and mapping.get(first) == "params" else "")
        raise Fail(f"{len(wrong)} of {len(NOTATION)} names are not right yet ({', '.join(wrong)}): {first} is "
                   f"{MEANING[first]}{hint}; look up its name in code in the notation table (section 4)")
    return "you know the notation: θ theta, θ′ adapted, α inner_lr, β and ε outer_lr, K shots"


@checker
def check_sine(fn):
    """01: y = A sin(x − φ)."""
    x = torch.linspace(-5, 5, 11).reshape(-1, 1)
    result = expect_tensor(call(fn, x, 2.0, 0.5), x)
    diagnose(result, {
        "wrong sign of the phase: the tasks use sin(x − φ), not sin(x + φ)": 2.0 * torch.sin(x + 0.5),
        "the amplitude is missing: multiply by A": torch.sin(x - 0.5),
    })
    if not close(result, 2.0 * torch.sin(x - 0.5), rtol=1e-4, atol=1e-5):
        raise Fail("values differ from A sin(x − φ): check your formula with A=2, φ=0.5")
    return "sine(x, A, φ) = A sin(x − φ) is right"


def _check_graph(model, params, result, task, lr, what="θ′"):
    """Is the graph through the inner step second order? Fail with the specific reason if not."""
    if not any(v.requires_grad for v in result.values()):
        raise Fail(f"{what} is cut from the graph (.detach(), torch.no_grad() or .data?): "
                   "the outer update must differentiate through the inner step")
    second = meta_grad(model, params, maml.inner_update(model, params, task.x_support, task.y_support,
                                                        F.mse_loss, lr), task)
    first = meta_grad(model, params, maml.inner_update(model, params, task.x_support, task.y_support,
                                                       F.mse_loss, lr, first_order=True), task)
    return second, first


@checker
def check_inner_update(fn):
    """02: one inner step θ′ = θ − α ∇_θ L(θ), differentiable (second order)."""
    model, params, tasks = setup()
    scrambled(model)
    task, lr = tasks[0], 0.1
    before = P.flatten(params).detach().clone()
    result = call(fn, model, params, task.x_support, task.y_support, F.mse_loss, lr)
    got = expect_params(result, params)
    expect_unchanged(params, before)
    ref = maml.inner_update(model, params, task.x_support, task.y_support, F.mse_loss, lr)
    step = P.flatten(ref).detach() - before  # −α ∇L
    stored = P.detach(P.get_params(model), requires_grad=True)
    stored_step = P.flatten(maml.inner_update(model, stored, task.x_support, task.y_support, F.mse_loss, lr)).detach()
    if close(got, stored_step) or close(got, before + stored_step - P.flatten(stored).detach()):
        raise Fail(MODEL_NOT_DICT)  # the step taken from, or with the gradient at, the stored parameters
    diagnose(got, {
        "wrong sign: θ′ = θ − α ∇L(θ) steps downhill, yours moved uphill": before - step,
        "the gradient is not scaled by inner_lr (α): θ′ = θ − α ∇L(θ)": before + step / lr,
        "θ′ equals θ: no step was taken": before,
    })
    if not close(got, P.flatten(ref)):
        raise Fail("values differ from θ − α ∇L(θ, support): check the loss is on (x, y) and the step on every tensor")
    second, first = _check_graph(model, params, result, task, lr)
    mine = meta_grad(model, params, result, task)
    diagnose(mine, {"the meta-gradient lacks the Hessian term: call torch.autograd.grad(..., create_graph=True)":
                    None if close(first, second) else first})
    if not close(mine, second):
        raise Fail("values are right but the gradient through them is not: keep the graph (create_graph=True)")
    return "inner_update matches mamlkit.maml.inner_update, values and second-order meta-gradient"


@checker
def check_adapt(fn):
    """02: ``inner_steps`` inner updates, differentiable."""
    model, params, tasks = setup()
    scrambled(model)
    task, lr, steps = tasks[1], 0.05, 3
    args = (task.x_support, task.y_support, F.mse_loss, lr)
    result = call(fn, model, params, *args, steps)
    got = expect_params(result, params)
    before = P.flatten(params).detach()
    one = P.flatten(maml.adapt(model, params, *args, 1)).detach()
    stored = P.detach(P.get_params(model), requires_grad=True)
    diagnose(got, {
        "that is one step from θ: each step starts from the last θ′, so pass the adapted dict, not theta, "
        "to the next inner update": one,
        "every step used the gradient at θ: each step starts from the last θ′ and takes the gradient there":
            before + steps * (one - before),
        MODEL_NOT_DICT: P.flatten(maml.adapt(model, stored, *args, steps, first_order=True)).detach(),
        MODEL_NOT_DICT + ", at every step":  # θ minus k times the gradient at the stored parameters
            before + steps * (P.flatten(maml.inner_update(model, stored, *args)).detach() - P.flatten(stored).detach()),
        **{f"you took {k} inner step(s) instead of inner_steps={steps}: loop range(inner_steps)":
           P.flatten(maml.adapt(model, params, *args, k)) for k in (steps - 1, steps + 1)},
    })
    ref = maml.adapt(model, params, *args, steps)
    if not close(got, P.flatten(ref)):
        raise Fail("values differ from 3 inner steps on the support set: each step starts from the last θ′")
    _check_graph(model, params, result, task, lr)
    if not close(meta_grad(model, params, result, task), meta_grad(model, params, ref, task)):
        raise Fail("the meta-gradient through your steps lacks second-order terms: use create_graph=True")
    return "adapt matches mamlkit.maml.adapt after 3 steps, graph kept"


def _linear_problem():
    g = torch.Generator().manual_seed(3)
    x_s, x_q = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    y_s, y_q = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    return x_s, y_s, x_q, y_q, torch.randn(3, generator=g, dtype=torch.float64), 0.1


@checker
def check_meta_gradient_linear(fn):
    """03: closed-form one-step meta-gradient (I − α H_support) ∇L_query(w′) of a linear model."""
    x_s, y_s, x_q, y_q, w, lr = _linear_problem()
    result = expect_tensor(call(fn, x_s, y_s, x_q, y_q, w, lr), w)
    grad = lambda x, y, v: 2 / len(x) * x.T @ (x @ v - y)
    h_s, h_q, eye = 2 / len(x_s) * x_s.T @ x_s, 2 / len(x_q) * x_q.T @ x_q, torch.eye(3, dtype=w.dtype)
    adapted = w - lr * grad(x_s, y_s, w)
    diagnose(result, {
        "you dropped the Hessian term: that is First-Order MAML; multiply by (I − α H_support)":
            grad(x_q, y_q, adapted),
        "wrong sign of the Hessian term: it is (I − α H), because θ′ = θ − α ∇L":
            (eye + lr * h_s) @ grad(x_q, y_q, adapted),
        "use the Hessian of the support loss (the inner step used the support set), not of the query loss":
            (eye - lr * h_q) @ grad(x_q, y_q, adapted),
        "evaluate the query gradient at the adapted w′ = w − α ∇L_support(w), not at w":
            (eye - lr * h_s) @ grad(x_q, y_q, w),
    })
    if not close(result, (eye - lr * h_s) @ grad(x_q, y_q, adapted)):
        raise Fail("values differ from (I − α H_s) ∇L_q(w′) with L(w) = mean((x w − y)²), ∇L = 2/n xᵀ(x w − y)")
    return "your closed form equals (I − α H_support) ∇L_query(w′)"


@checker
def check_meta_loss(fn):
    """03: mean over tasks of the query loss after one second-order inner step."""
    model, params, tasks = setup()
    scrambled(model)
    lr = 0.1
    result = expect_tensor(call(fn, model, params, tasks, F.mse_loss, lr), torch.tensor(0.0), "the meta-loss")
    ref = maml.maml_loss(model, params, tasks, F.mse_loss, lr)
    at_theta = torch.stack([F.mse_loss(P.forward(model, params, t.x_query), t.y_query) for t in tasks]).mean()
    diagnose(result, {
        f"you summed over the {len(tasks)} tasks: average them (mean), as mamlkit.maml.maml_loss does":
            ref * len(tasks),
        "that is the query loss at θ: adapt first, then evaluate the query loss at θ′": at_theta,
    })
    if not close(result, ref):
        raise Fail("value differs from mean_i L_query(θ′_i): adapt on the support set, evaluate on the query set")
    if not result.requires_grad:
        raise Fail("the meta-loss is cut from the graph: no .detach() / .item() / torch.no_grad()")
    mine = torch.autograd.grad(result, list(params.values()), allow_unused=True)
    mine = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params.values(), mine)])
    first = torch.autograd.grad(maml.maml_loss(model, params, tasks, F.mse_loss, lr, first_order=True),
                                list(params.values()))
    diagnose(mine, {"the meta-gradient lacks the Hessian term: the inner step needs create_graph=True":
                    torch.cat([g.reshape(-1) for g in first])})
    if not close(mine, torch.cat([g.reshape(-1) for g in torch.autograd.grad(ref, list(params.values()))])):
        raise Fail("the value is right but its gradient is not: keep the graph of the inner step")
    return "your meta-loss and its meta-gradient match mamlkit.maml.maml_loss"


@checker
def check_ci95(fn):
    """04: mean and 95% CI half-width 1.96 s / √n (unbiased s) of per-task errors."""
    per_task = torch.tensor([0.3, 1.2, 0.8, 0.1, 2.5, 0.7, 0.4, 1.9, 0.6, 1.1])
    result = call(fn, per_task)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise Fail(f"return a pair (mean, half_width), got {type(result).__name__}")
    try:
        mean, half = float(result[0]), float(result[1])
    except (TypeError, ValueError):
        raise Fail("mean and half_width should be numbers (float or 0-d tensor)") from None
    n, s = len(per_task), float(per_task.std(unbiased=True))
    if not math.isclose(mean, float(per_task.mean()), rel_tol=1e-5):
        raise Fail("the first value should be the mean of the per-task errors")
    diagnose(half, {
        "divide by √n: the CI of a mean shrinks with the number of tasks": 1.96 * s,
        "use the unbiased standard deviation (divide by n − 1): tensor.std(unbiased=True)":
            1.96 * float(per_task.std(unbiased=False)) / math.sqrt(n),
        "a 95% interval is 1.96 standard errors wide on each side": s / math.sqrt(n),
    }, compare=lambda a, b: math.isclose(a, b, rel_tol=1e-4))
    if not math.isclose(half, 1.96 * s / math.sqrt(n), rel_tol=1e-4):
        raise Fail("half-width differs from 1.96 · std / √n")
    return "mean ± 1.96 s/√n, as mamlkit.training.evaluate reports it"


@checker
def check_first_order(fn):
    """05: the First-Order MAML meta-gradient of one task after one inner step."""
    model, params, tasks = setup()
    scrambled(model)
    task, lr = tasks[2], 0.1
    result = call(fn, model, params, task, F.mse_loss, lr)
    got = expect_params(result, params).detach()
    first, second = (meta_grad(model, params, maml.inner_update(model, params, task.x_support, task.y_support,
                                                                F.mse_loss, lr, first_order=fo), task)
                     for fo in (True, False))
    at_theta = meta_grad(model, params, params, task)
    diagnose(got, {
        "that is the full (second-order) MAML gradient: treat the inner gradient as a constant "
        "(create_graph=False / detach θ′) and take ∇ at θ′": None if close(first, second) else second,
        "wrong sign: return the gradient ∇_θ′ L_query(θ′), the optimiser subtracts it": -first,
        "that is the query gradient at θ: take the inner step first and differentiate at θ′": at_theta,
    })
    if not close(got, first):
        raise Fail("values differ from ∇_θ′ L_query(θ′) with θ′ = θ − α ∇L_support(θ)")
    return "FOMAML gradient ∇_θ′ L_query(θ′) is right: no Hessian term"


@checker
def check_reptile_update(fn):
    """06: θ + ε (mean_i φ_i − θ)."""
    model, params, tasks = setup()
    theta = P.detach(params)
    phis = [P.detach(maml.adapt(model, theta, t.x_support, t.y_support, F.mse_loss, 0.05, 3, True)) for t in tasks]
    before, eps = P.flatten(theta).clone(), 0.3
    got = expect_params(call(fn, theta, phis, eps), theta)
    expect_unchanged(theta, before)
    mean_phi = P.flatten(P.mean(phis))
    diagnose(got, {
        "wrong sign: Reptile moves θ toward the adapted φ, θ + ε (mean φ − θ)": before - eps * (mean_phi - before),
        "you summed over tasks: average the φ_i (or the differences), mean_i φ_i − θ":
            before + eps * len(phis) * (mean_phi - before),
        "you moved all the way to mean φ: scale the move by ε (outer_lr)": mean_phi,
        "you used only the first task: average over all φ_i": before + eps * (P.flatten(phis[0]) - before),
    })
    if not close(got, before + eps * (mean_phi - before)):
        raise Fail("values differ from θ + ε (mean_i φ_i − θ)")
    return "Reptile update θ + ε (mean φ − θ) matches mamlkit.params.lerp"


def _normal(n: int, seed: int) -> torch.Tensor:
    """``n`` draws with mean exactly 0 and unbiased standard deviation exactly 1 (float64)."""
    z = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (z - z.mean()) / z.std()


def significance_cases(n: int = 600) -> list:
    """Per-task errors of two methods on the same ``n`` tasks, and whether they differ (paired 95% CI of the
    mean difference excludes 0). Built so that each typical wrong rule gets a different pattern of answers."""
    base, z2, z3 = 3 + _normal(n, 0), _normal(n, 1), _normal(n, 2)
    return [
        ((base - 0.02 + 0.07 * z2, base), True),    # shared difficulty, a small real gain: intervals overlap
        ((base + z2 - 1, 3 + z3 - 1), False),        # independent noise, no difference
        ((base + 0.5 + 0.07 * z2, base), True),     # a clearly worse than b
        ((base - 0.14, 3 + z2), True),              # independent, 0.14 apart: intervals overlap, yet different
        ((base - 0.5, 3 + z2), True),               # independent, 0.5 apart
    ]


def _interval(e: torch.Tensor, sqrt_n: bool = True) -> tuple[float, float]:
    return float(e.mean()), float(1.96 * e.std() / (math.sqrt(len(e)) if sqrt_n else 1.0))


SIGNIFICANCE_MISTAKES = {
    "you compared the two methods' intervals (do they overlap?): that rule is wrong, and these methods were "
    "scored on the same tasks: take the per-task differences a − b and their own 95% interval":
        lambda a, b: abs(_interval(a)[0] - _interval(b)[0]) > _interval(a)[1] + _interval(b)[1],
    "you treated a and b as independent samples: they were scored on the same tasks, so take the per-task "
    "differences a − b first (a hard task is hard for both)":
        lambda a, b: abs(_interval(a)[0] - _interval(b)[0]) > math.hypot(_interval(a)[1], _interval(b)[1]),
    "the interval of a mean is 1.96 s / √n (n tasks), not 1.96 s":
        lambda a, b: abs(_interval(a - b, sqrt_n=False)[0]) > _interval(a - b, sqrt_n=False)[1],
    "a difference is significant in either direction: check that the interval mean ± ci lies entirely "
    "above 0 or entirely below 0":
        lambda a, b: _interval(a - b)[0] + _interval(a - b)[1] < 0,
}


@checker
def check_significant(fn):
    """07: the paired test. Two methods' per-task errors on the same tasks: does the 95% CI of the mean
    per-task difference exclude 0?"""
    cases = significance_cases()
    answers = []
    for (a, b), _ in cases:
        result = call(fn, a.clone(), b.clone())
        if isinstance(result, torch.Tensor) and result.numel() == 1:
            result = bool(result)
        if type(result).__name__ not in ("bool", "bool_"):
            raise Fail(f"return True or False, got {type(result).__name__}")
        answers.append(bool(result))
    if answers == [want for _, want in cases]:
        return "paired test right: per-task differences, mean ± 1.96 s/√n, significant when 0 is outside"
    for hint, rule in SIGNIFICANCE_MISTAKES.items():
        if answers == [bool(rule(a, b)) for (a, b), _ in cases]:
            raise Fail(hint)
    wrong = next(i for i, ((_, want), got) in enumerate(zip(cases, answers)) if got != want)
    mean, ci = _interval(cases[wrong][0][0] - cases[wrong][0][1])
    raise Fail(f"case {wrong + 1}: the per-task differences a − b give {mean:.3f} ± {ci:.3f}, so the answer is "
               f"{cases[wrong][1]}, you returned {answers[wrong]}: significant means 0 lies outside mean ± ci")
