"""Checkers for the graded homework in ``homework/`` (nbgrader), for the exercises the course notebooks
do not have; the same one-line "✔ ..." / "✘ <hint>" feedback as ``mamlkit.course.checks``. The project
(assignment 5) has its own module, ``mamlkit.course.project``.

Each assignment asks for a variant the notebooks did not have the learner write (Meta-SGD's update, the
meta-gradient through several steps, the first-order gap measured, Reptile's Adam and mini-batches), and
grades it only if the learner's function does the work itself: ``on_its_own`` runs it while watching
for calls into the library's own algorithms (``mamlkit.maml``, ``inner``, ``reptile``, these checkers…);
only the helpers of ``ALLOWED`` (parameter dicts, models, tasks) may be called.

Introduced in homework/source/hw1_meta_sgd (see homework/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import maml, reptile
from .. import params as P
from ..inner import Adam, InnerLoop, step_batch, support_grads
from .checks import setup
from .feedback import Fail, call, checker, close, diagnose, expect_params, expect_tensor, expect_unchanged

LIBRARY = Path(__file__).resolve().parents[1]  # the mamlkit package
# what a graded function may call: parameter dicts and forward, the models, the Task container
ALLOWED = ("params.py", "models.py", "tasks.py")


class LibraryCall(AssertionError):
    """A graded function called the library's own implementation instead of computing the answer."""


def _root_module(package: str):
    return sys.modules.get(package) or __import__(package, fromlist=["_"])


def _root(package: str) -> Path:
    return Path(_root_module(package).__file__).resolve().parent


def _watched_name(code, roots: dict) -> str | None:
    """``mamlkit.maml.inner_update`` for a function of a watched package (outside ``ALLOWED``), else None."""
    if code.co_name == "<module>":  # a first import runs the module's code: not a call of the learner's
        return None
    for package, root in roots.items():
        try:
            path = Path(code.co_filename).resolve().relative_to(root)
        except ValueError:
            continue
        if package == "mamlkit" and path.as_posix() in ALLOWED:
            return None
        module = ".".join((package, *path.with_suffix("").parts)).removesuffix(".__init__")
        return f"{module}.{getattr(code, 'co_qualname', code.co_name)}"
    return None


def library_calls(fn, *args, also: tuple[str, ...] = ()):
    """``fn(*args)`` and the library functions called from outside the library while it ran (the learner's
    calls, not those the library makes itself); ``also`` watches more packages, e.g. ``("torch.optim",)``.
    Watches with ``sys.setprofile``, so a call through an alias, a ``partial`` or a method is seen too."""
    calls = []
    return _watch(fn, args, also, calls), list(dict.fromkeys(calls))


def _watch(fn, args, also, calls: list):
    """``fn(*args)``, appending to ``calls`` each watched function called from outside (even if ``fn`` raises)."""
    roots = {"mamlkit": LIBRARY, **{package: _root(package) for package in also}}
    # code objects carry the path the module was imported by: the resolved one, or the one through a link
    unresolved = [Path(__file__).parents[1]] + [Path(_root_module(p).__file__).parent for p in also]
    prefixes = tuple({str(r) for r in [*roots.values(), *unresolved]})
    wrappers = {_watch.__code__, call.__code__}  # they call the learner's function (which may be ours)

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(prefixes) and frame.f_code not in wrappers:
            caller = frame.f_back
            if caller is None or caller.f_code in wrappers or not caller.f_code.co_filename.startswith(prefixes):
                name = _watched_name(frame.f_code, roots)
                if name is not None:
                    calls.append(name)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        return fn(*args)
    finally:
        try:
            sys.setprofile(previous)
        except TypeError:  # a C-level profiler (cProfile) cannot be put back from Python
            sys.setprofile(None)


def library_call_message(calls: list[str]) -> str:
    return (f"your function calls {calls[0]}: the graded function must compute it itself "
            f"(use torch, {', '.join('mamlkit.' + a[:-3] for a in ALLOWED)} and your own functions)")


def on_its_own(fn, also: tuple[str, ...] = ()):
    """``fn``, refusing (``LibraryCall``, an AssertionError: the hidden test fails) if it calls the library
    (or a package of ``also``)."""
    def run(*args):
        result, calls = library_calls(fn, *args, also=also)
        if calls:
            raise LibraryCall(library_call_message(calls))
        return result
    return run


def call_alone(fn, *args, also: tuple[str, ...] = ()):
    """``feedback.call`` that also fails, with a one-line hint, when ``fn`` calls the library's implementation."""
    if not callable(fn):
        raise Fail(f"expected a function, got {type(fn).__name__}")
    calls = []
    try:
        result = _watch(call, (fn, *args), also, calls)
    except Fail:
        if calls:  # it called the library, then failed: the call is what to fix
            raise Fail(library_call_message(calls)) from None
        raise
    if calls:
        raise Fail(library_call_message(calls))
    return result


# --- hw1: Meta-SGD -------------------------------------------------------------------------------

def _alphas(params, seed: int = 0, requires_grad: bool = True) -> dict:
    """Per-element step sizes in [0.02, 0.12), float64 like ``params``, leaves of the graph."""
    g = torch.Generator().manual_seed(seed)
    return {k: (0.02 + 0.1 * torch.rand(v.shape, generator=g, dtype=v.dtype)).requires_grad_(requires_grad)
            for k, v in params.items()}


def _meta_sgd_loop(alphas, first_order: bool = False) -> InnerLoop:
    return InnerLoop.sgd(alphas, 1, first_order)


def _grad_of(loss, leaves) -> torch.Tensor:
    """∇ loss w.r.t. ``leaves``, flattened; zeros where ``loss`` does not depend on a leaf."""
    grads = torch.autograd.grad(loss, leaves, allow_unused=True, retain_graph=True)
    return torch.cat([(torch.zeros_like(v) if g is None else g).reshape(-1) for v, g in zip(leaves, grads)])


@checker
def check_meta_sgd_update(fn):
    """hw1: θ' = θ − α ⊙ ∇L(θ), second order in θ, differentiable in α."""
    model, params, tasks = setup()
    task, alphas = tasks[0], _alphas(params)
    before = P.flatten(params).detach().clone()
    result = call_alone(fn, model, params, alphas, task.x_support, task.y_support, F.mse_loss)
    got = expect_params(result, params)
    expect_unchanged(params, before)
    ref = {k: _meta_sgd_loop(alphas, fo).adapt(model, F.mse_loss, params, task.x_support, task.y_support)[0]
           for k, fo in (("second", False), ("first", True))}
    grad_support = torch.autograd.grad(F.mse_loss(P.forward(model, params, task.x_support), task.y_support),
                                       list(params.values()))
    g = torch.cat([v.reshape(-1) for v in grad_support])
    flat_alpha = P.flatten(alphas).detach()
    diagnose(got.detach(), {
        "wrong sign: step downhill, θ − α ⊙ ∇L(θ)": before + flat_alpha * g,
        "you used one step size (the mean of α): multiply each gradient element by its own α[name]":
            before - flat_alpha.mean() * g,
    })
    if not close(got.detach(), P.flatten(ref["second"]).detach()):
        raise Fail("values differ from θ − α ⊙ ∇_θ loss_fn(f_θ(x), y): one step on (x, y), α[name] per element")
    query = lambda adapted: F.mse_loss(P.forward(model, adapted, task.x_query), task.y_query)
    if not result[next(iter(params))].requires_grad:
        raise Fail("θ′ is cut from the graph: no .detach() (the outer loop differentiates through θ′)")
    got_alpha, ref_alpha = (_grad_of(query(a), list(alphas.values())) for a in (result, ref["second"]))
    if not got_alpha.abs().sum() > 0:
        raise Fail("α is not in the graph of θ′ (did you detach alphas or use .item()?): Meta-SGD learns α "
                   "from ∂L_query(θ′)/∂α")
    got_theta, ref_theta, first = (_grad_of(query(a), list(params.values()))
                                   for a in (result, ref["second"], ref["first"]))
    diagnose(got_theta, {"keep the graph of the gradient (create_graph=True): the meta-gradient w.r.t. θ "
                         "misses the Hessian term": first})
    if not (close(got_theta, ref_theta) and close(got_alpha, ref_alpha)):
        raise Fail("θ′ has the right values but the wrong gradients: build it from params, alphas and the "
                   "gradient of the support loss")
    return "meta_sgd_update equals θ − α ⊙ ∇L(θ), differentiable in θ (second order) and in α"


@checker
def check_alpha_meta_gradient(fn):
    """hw1: ∂L_query(θ′)/∂α = −∇L_support(θ) ⊙ ∇L_query(θ′)."""
    model, params, tasks = setup(seed=1)
    task, alphas = tasks[0], _alphas(params, seed=1)
    got = expect_params(call_alone(fn, model, params, alphas, task, F.mse_loss), alphas, "the gradient").detach()
    adapted = _meta_sgd_loop(alphas).adapt(model, F.mse_loss, params, task.x_support, task.y_support)[0]
    query = F.mse_loss(P.forward(model, adapted, task.x_query), task.y_query)
    ref = _grad_of(query, list(alphas.values()))
    g_support = _grad_of(F.mse_loss(P.forward(model, params, task.x_support), task.y_support), list(params.values()))
    g_query_at_theta = _grad_of(F.mse_loss(P.forward(model, params, task.x_query), task.y_query),
                                list(params.values()))
    theta_grad = _grad_of(F.mse_loss(P.forward(model, adapted, task.x_query), task.y_query), list(params.values()))
    diagnose(got, {
        "wrong sign: θ′ = θ − α ⊙ g, so ∂θ′/∂α = −g": -ref,
        "take the query gradient at θ′ (after the step), not at θ": -g_support * g_query_at_theta,
        "that is the meta-gradient w.r.t. θ: the one w.r.t. α is −∇L_support(θ) ⊙ ∇L_query(θ′)": theta_grad,
    })
    if not close(got, ref):
        raise Fail("values differ from −∇_θ L_support(θ) ⊙ ∇_θ′ L_query(θ′), element by element")
    return "alpha_meta_gradient equals autograd's ∂L_query(θ′)/∂α: −∇L_support(θ) ⊙ ∇L_query(θ′)"


@checker
def check_meta_sgd_outer_step(fn):
    """hw1: one plain-SGD outer step on θ and α together."""
    model, params, tasks = setup(seed=2)
    alphas, outer_lr = _alphas(params, seed=2), 0.05
    before = torch.cat([P.flatten(params), P.flatten(alphas)]).detach().clone()
    result = call_alone(fn, model, params, alphas, tasks, F.mse_loss, outer_lr)
    if not isinstance(result, tuple) or len(result) != 2:
        raise Fail(f"return a tuple (new_params, new_alphas), got {type(result).__name__}")
    got = torch.cat([expect_params(result[0], params, "new_params"),
                     expect_params(result[1], alphas, "new_alphas")]).detach()
    if not torch.equal(torch.cat([P.flatten(params), P.flatten(alphas)]).detach(), before):
        raise Fail("your function changed params or alphas in place: return new dicts")
    leaves = [*params.values(), *alphas.values()]

    def step(first_order=False, total=False):
        loop = _meta_sgd_loop(alphas, first_order)
        losses = torch.stack([F.mse_loss(P.forward(model, loop.adapt(model, F.mse_loss, params, t.x_support,
                                                                      t.y_support)[0], t.x_query), t.y_query)
                              for t in tasks])
        return before - outer_lr * _grad_of(losses.sum() if total else losses.mean(), leaves)

    ref, n = step(), P.flatten(params).numel()
    diagnose(got, {
        "α did not move: take the step on alphas too, α − β ∇_α M": torch.cat([ref[:n], before[n:]]),
        "θ did not move: take the step on params too, θ − β ∇_θ M": torch.cat([before[:n], ref[n:]]),
        "wrong sign: step downhill, − β ∇M": 2 * before - ref,
        f"you summed over the {len(tasks)} tasks: average the query losses": step(total=True),
        "θ's meta-gradient misses the Hessian term: meta_sgd_update must keep the graph (create_graph=True)":
            step(first_order=True),
    })
    if not close(got, ref):
        raise Fail("values differ from (θ, α) − β ∇ mean_i L_query(θ′_i) with θ′_i = θ − α ⊙ ∇L_support(θ)")
    return "meta_sgd_outer_step moves θ and α by − β × the Meta-SGD meta-gradient"


# --- hw2: the meta-gradient through several steps -------------------------------------------------

def _linear_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x_s, x_q = (torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (6, 5))
    y_s, y_q = (torch.randn(n, generator=g, dtype=torch.float64) for n in (6, 5))
    return x_s, y_s, x_q, y_q, torch.randn(3, generator=g, dtype=torch.float64)


def _linear_steps(x_s, y_s, x_q, y_q, w, lr, steps, factors=None, at=None):
    """(I − α H)^factors ∇L_query(w at step ``at``): the answer (factors = at = steps) and typical mistakes."""
    grad = lambda x, y, v: 2 / len(x) * x.T @ (x @ v - y)
    path = [w]
    for _ in range(steps):
        path.append(path[-1] - lr * grad(x_s, y_s, path[-1]))
    jacobian = torch.eye(len(w), dtype=w.dtype) - lr * 2 / len(x_s) * x_s.T @ x_s
    factors, at = steps if factors is None else factors, steps if at is None else at
    return torch.linalg.matrix_power(jacobian, factors) @ grad(x_q, y_q, path[at])


@checker
def check_meta_gradient_linear_steps(fn):
    """hw2: (I − α H_support)^k ∇L_query(w_k) for the linear model."""
    problem, lr, k = _linear_problem(), 0.1, 3
    got = expect_tensor(call_alone(fn, *problem, lr, k), problem[-1], "the meta-gradient")
    ref = _linear_steps(*problem, lr, k)
    diagnose(got, {
        "that is the First-Order MAML gradient ∇L_query(w_k): multiply by (I − α H_support)^k": _linear_steps(
            *problem, lr, k, factors=0),
        f"one factor (I − α H) per inner step: (I − α H)^k, here k = {k}": _linear_steps(*problem, lr, k, factors=1),
        "take the query gradient at w_k, after the k steps, not at w": _linear_steps(*problem, lr, k, at=0),
        f"you took 1 inner step instead of inner_steps={k}": _linear_steps(*problem, lr, 1),
    })
    if not close(got, ref):
        raise Fail("values differ from (I − α H_support)^k ∇L_query(w_k), H = 2/n xᵀx, ∇L(w) = 2/n xᵀ(xw − y)")
    if not close(call_alone(fn, *problem, lr, 0), _linear_steps(*problem, lr, 0)):
        raise Fail("with inner_steps = 0 the meta-gradient is the query gradient at w, 2/n x_qᵀ(x_q w − y_q)")
    return "meta_gradient_linear equals (I − α H)^k ∇L_query(w_k) (autograd through k steps agrees)"


def _msl(model, params, tasks, lr, weights, first_order=False, total=False, offset=1):
    """The multi-step loss and its typical mistakes (``offset=0`` weights θ_0 … θ_{k−1})."""
    loop = InnerLoop.sgd(lr, len(weights), first_order)
    losses = []
    for t in tasks:
        path = loop.trajectory(model, F.mse_loss, params, t.x_support, t.y_support)[0]
        losses.append(sum(v * F.mse_loss(P.forward(model, path[j + offset], t.x_query), t.y_query)
                          for j, v in enumerate(weights)))
    return torch.stack(losses).sum() if total else torch.stack(losses).mean()


@checker
def check_multi_step_loss(fn):
    """hw2: MAML++'s multi-step loss, second order."""
    model, params, tasks = setup(seed=3)
    lr, weights = 0.1, [0.2, 0.3, 0.5]
    result = call_alone(fn, model, params, tasks, F.mse_loss, lr, weights)
    if not isinstance(result, torch.Tensor) or result.dim() != 0:
        raise Fail(f"return a 0-d tensor (the loss), got {type(result).__name__} "
                   f"{tuple(result.shape) if isinstance(result, torch.Tensor) else ''}")
    last = InnerLoop.sgd(lr, len(weights))
    only_last = torch.stack([F.mse_loss(P.forward(model, last.adapt(model, F.mse_loss, params, t.x_support,
                                                                   t.y_support)[0], t.x_query), t.y_query)
                             for t in tasks]).mean()
    ref = _msl(model, params, tasks, lr, weights)
    diagnose(result.detach(), {
        "weights[0] goes with θ_1, the parameters after the first step (not θ_0 before it)":
            _msl(model, params, tasks, lr, weights, offset=0).detach(),
        "you used only the last step: weight the query loss after every step": only_last.detach(),
        "… times weights[-1]: add weights[j-1] × the query loss after every step j": (weights[-1] * only_last).detach(),
        f"you summed over the {len(tasks)} tasks: average them": _msl(model, params, tasks, lr, weights,
                                                                      total=True).detach(),
    })
    if not close(result.detach(), ref.detach()):
        raise Fail("values differ from mean_i sum_j weights[j-1] L_query(θ_j), θ_j after j SGD steps of inner_lr "
                   "on the support set")
    if not result.requires_grad:
        raise Fail("the loss is cut from the graph: no .detach() / .item(), the outer loop differentiates it")
    leaves = list(params.values())
    got = _grad_of(result, leaves)
    diagnose(got, {"keep the graph of every inner step (create_graph=True): the gradient misses the Hessian terms":
                   _grad_of(_msl(model, params, tasks, lr, weights, first_order=True), leaves)})
    if not close(got, _grad_of(ref, leaves)):
        raise Fail("the value is right but its gradient is not: build every θ_j from params through the steps")
    return "multi_step_loss equals MAML++'s weighted query losses after every step, second order"


# --- hw3: the first-order gap ----------------------------------------------------------------------

def _meta_gradients(model, params, task, lr, steps, first_order, loss_fn=F.mse_loss) -> torch.Tensor:
    """The (first-order) MAML meta-gradient of one task, flattened."""
    loss = maml.maml_loss(model, params, [task], loss_fn, lr, steps, first_order)
    return _grad_of(loss, list(params.values()))


@checker
def check_maml_and_fomaml_gradients(fn):
    """hw3: MAML's and FOMAML's meta-gradients of one task after k steps."""
    model, params, tasks = setup(seed=4)
    task, lr, k = tasks[0], 0.1, 3
    result = call_alone(fn, model, params, task, F.mse_loss, lr, k)
    if not isinstance(result, tuple) or len(result) != 2:
        raise Fail(f"return a tuple (g_maml, g_fomaml), got {type(result).__name__}")
    got = [expect_params(g, params, what).detach() for g, what in zip(result, ("g_maml", "g_fomaml"))]
    ref = [_meta_gradients(model, params, task, lr, k, fo) for fo in (False, True)]
    query_at_theta = _grad_of(F.mse_loss(P.forward(model, params, task.x_query), task.y_query), list(params.values()))
    if close(got[0], ref[1]) and close(got[1], ref[0]):
        raise Fail("you swapped them: return (g_maml, g_fomaml)")
    if close(got[0], ref[1]):
        raise Fail("g_maml equals the first-order gradient: keep the graph of every inner step (create_graph=True) "
                   "and differentiate w.r.t. params")
    for i, what in enumerate(("g_maml", "g_fomaml")):
        diagnose(got[i], {
            f"{what}: take the query gradient after the inner steps, at θ_k, not at θ": query_at_theta,
            f"{what}: you took 1 inner step instead of inner_steps={k}": _meta_gradients(model, params, task, lr, 1,
                                                                                        bool(i)),
        })
    for i, what in enumerate(("g_maml", "g_fomaml")):
        if not close(got[i], ref[i]):
            raise Fail(f"{what} differs from {('∇_θ', '∇_θk')[i]} L_query(θ_k) after {k} SGD steps of inner_lr")
    return "both meta-gradients match (second order through the k steps; first order at θ_k)"


def _gap(model, params, tasks, lr, steps, relative_to=0, per_task=False):
    g = [torch.stack([_meta_gradients(model, params, t, lr, steps, fo) for t in tasks]) for fo in (False, True)]
    if per_task:
        rel = ((g[0] - g[1]).norm(dim=1) / g[relative_to].norm(dim=1)).mean()
        cos = F.cosine_similarity(g[0], g[1], dim=1).mean()
    else:
        m = [v.mean(0) for v in g]
        rel, cos = (m[0] - m[1]).norm() / m[relative_to].norm(), F.cosine_similarity(m[0], m[1], dim=0)
    return [float(rel), float(cos)]


@checker
def check_first_order_gap(fn):
    """hw3: relative error and cosine between the task-averaged MAML and FOMAML meta-gradients."""
    model, params, tasks = setup(seed=5)
    lr, k = 0.2, 2
    result = call_alone(fn, model, params, tasks, F.mse_loss, lr, k)
    if not isinstance(result, tuple) or len(result) != 2 or not all(isinstance(v, (float, int)) for v in result):
        raise Fail(f"return a tuple of two floats (relative_error, cosine), got {result!r:.60}")
    ref = _gap(model, params, tasks, lr, k)
    diagnose(list(result), {
        "you swapped them: return (relative_error, cosine)": ref[::-1],
        "divide by ‖ḡ_MAML‖, the exact gradient, not by ‖ḡ_FO‖": _gap(model, params, tasks, lr, k, relative_to=1),
        "average the gradients over tasks first, then compare (not the mean of per-task gaps)":
            _gap(model, params, tasks, lr, k, per_task=True),
    })
    if not close(result[0], ref[0]):
        raise Fail("the relative error differs from ‖ḡ_MAML − ḡ_FO‖ / ‖ḡ_MAML‖ (all parameters in one vector)")
    if not close(result[1], ref[1]):
        raise Fail("the cosine differs from ḡ_MAML·ḡ_FO / (‖ḡ_MAML‖ ‖ḡ_FO‖)")
    return f"first_order_gap measured: relative error {ref[0]:.3f}, cosine {ref[1]:.4f} (α = {lr}, k = {k})"


# --- hw4: Reptile with Adam on mini-batches --------------------------------------------------------

def _adam_variant(model, params, x, y, lr, steps, batch, betas, eps, bias=True, reset=False, eps_inside=False,
                  sgd=False):
    """Adam on mini-batches, and its typical mistakes (flags), as the checkers' table of wrong answers."""
    (b1, b2), phi = betas, P.detach(params)
    m, v = ({k: torch.zeros_like(p) for k, p in phi.items()} for _ in range(2))
    for t in range(1, steps + 1):
        xb, yb = step_batch(x, y, t - 1, batch)
        if reset:
            m, v = ({k: torch.zeros_like(p) for k, p in phi.items()} for _ in range(2))
            t = 1
        grads = support_grads(model, F.mse_loss, phi, xb, yb, create_graph=False)
        new = {}
        for k, p in phi.items():
            g = grads[k]
            if sgd:
                new[k] = p - lr * g
                continue
            m[k], v[k] = b1 * m[k] + (1 - b1) * g, b2 * v[k] + (1 - b2) * g * g
            mh, vh = (m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)) if bias else (m[k], v[k])
            new[k] = p - lr * mh / ((vh + eps).sqrt() if eps_inside else vh.sqrt() + eps)
        phi = P.detach(new)
    return P.flatten(phi)


@checker
def check_adam_adapt(fn):
    """hw4: Adam from zero moments on consecutive mini-batches, equal to torch.optim.Adam."""
    model, params, tasks = setup(seed=6, shots=9)
    task, lr, steps, batch, betas, eps = tasks[0], 0.01, 3, 3, (0.5, 0.9), 1e-3
    x, y = task.x_support, task.y_support
    before = P.flatten(params).detach().clone()
    got = expect_params(call_alone(fn, model, params, x, y, F.mse_loss, lr, steps, batch, betas, eps,
                                   also=("torch.optim",)), params, "φ").detach()
    expect_unchanged(params, before)
    ref = P.flatten(InnerLoop(Adam(lr, betas, eps), steps, first_order=True, batch=batch)
                    .adapt(model, F.mse_loss, params, x, y, graph=False)[0])
    variant = lambda **kw: _adam_variant(model, params, x, y, lr, steps, batch, betas, eps, **kw)
    diagnose(got, {
        "that is plain SGD: keep Adam's moments m and v and divide by √v̂ + ε": variant(sgd=True),
        "the moments restart every step: start from zero once, then carry m, v and t from step to step":
            variant(reset=True),
        "bias correction missing: divide m by 1 − β1^t and v by 1 − β2^t (t = 1, 2, …)": variant(bias=False),
        "ε goes outside the square root: √v̂ + ε": variant(eps_inside=True),
        "every step used all of (x, y): step t trains on examples (t−1)b … tb−1":
            _adam_variant(model, params, x, y, lr, steps, None, betas, eps),
        "wrong sign: step downhill, θ − lr m̂ / (√v̂ + ε)": 2 * before - ref,
    })
    if not close(got, ref):
        raise Fail("values differ from torch.optim.Adam(lr, betas, eps) on the mini-batches, from zero moments")
    return "adam_adapt equals torch.optim.Adam on consecutive mini-batches"


@checker
def check_reptile_adam_step(fn):
    """hw4: one Reptile outer step with the Adam inner loop on mini-batches."""
    model, params, tasks = setup(seed=7, shots=6)
    theta, lr, steps, batch, outer_lr = P.detach(params), 0.02, 3, 2, 0.3
    before = P.flatten(theta).clone()
    got = expect_params(call_alone(fn, model, theta, tasks, F.mse_loss, lr, steps, batch, outer_lr,
                                   also=("torch.optim",)), theta).detach()
    expect_unchanged(theta, before)
    step = lambda e=outer_lr, b=batch: P.flatten(
        reptile.reptile_step(model, theta, tasks, F.mse_loss, InnerLoop(Adam(lr), steps, True, b), outer_lr=e))
    ref = step()
    diagnose(got, {
        "you moved all the way to mean φ: scale the move by ε (outer_lr)": step(e=1.0),
        "wrong sign: Reptile moves θ toward the adapted φ_i, θ + ε (mean φ − θ)": 2 * before - ref,
        "you summed over tasks: average the φ_i": before + len(tasks) * (ref - before),
        "pass inner_batch on to adam_adapt: each step trains on a block of the support set": step(b=None),
    })
    if not close(got, ref):
        raise Fail("values differ from θ + ε (mean_i φ_i − θ), φ_i = adam_adapt on task i's support set")
    return "reptile_step matches mamlkit.reptile.reptile_step with the Adam inner loop on mini-batches"
