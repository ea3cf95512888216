"""iMAML against closed forms (linear model, MSE), an explicit Hessian solve, its first-order limit,
and its memory, which does not grow with the inner steps (float64)."""

import pytest
import torch
import torch.nn.functional as F
from test_training import crash_and_resume
from torch import nn

from mamlkit import imaml, maml
from mamlkit import params as P
from mamlkit.course.notebook import measure_cost
from mamlkit.models import MLP
from mamlkit.tasks import Task, sample_sine_tasks


def linear_task(device, seed=0, d=3, shots=7, queries=5):
    g = torch.Generator().manual_seed(seed)
    parts = [torch.randn(n, k, generator=g, dtype=torch.float64) for n, k in
             ((shots, d), (shots, 1), (queries, d), (queries, 1))]
    return Task(*parts).to(device)


def linear_model(device, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(3, 1).double().to(device)


def augmented(x):
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1)


def closed_form(theta_flat, task, lam):
    """φ* = (H + λI)⁻¹ (λθ + 2/n Aᵀy) and the implicit gradient (I + H/λ)⁻¹ ∇L_query(φ*), θ = [w, b]."""
    a_s, a_q = augmented(task.x_support), augmented(task.x_query)
    eye = torch.eye(a_s.shape[1], dtype=a_s.dtype, device=a_s.device)
    hessian = 2 / len(a_s) * a_s.T @ a_s
    phi = torch.linalg.solve(hessian + lam * eye, lam * theta_flat + 2 / len(a_s) * a_s.T @ task.y_support[:, 0])
    grad_q = 2 / len(a_q) * a_q.T @ (a_q @ phi - task.y_query[:, 0])
    return phi, torch.linalg.solve(eye + hessian / lam, grad_q), hessian


def batch_of(*tasks):
    return Task(*(torch.stack(t) for t in zip(*(task.tensors()[:4] for task in tasks))))


def flat_linear(d):
    return torch.cat([d["weight"].reshape(-1), d["bias"]])


@pytest.mark.parametrize("lam", [0.5, 2.0, 10.0])
def test_proximal_solution_matches_the_closed_form(device, lam):
    model, task = linear_model(device), linear_task(device)
    theta = P.get_params(model)
    expected, _, hessian = closed_form(flat_linear(theta).detach(), task, lam)
    lr = 1 / (float(torch.linalg.eigvalsh(hessian).max()) + lam)  # a stable step on the proximal problem
    phi = imaml.proximal_solution(model, F.mse_loss, theta, task, imaml.IMAML(lam, lr, steps=400))
    torch.testing.assert_close(flat_linear(phi), expected, rtol=0, atol=1e-8)
    assert all(v.grad_fn is None for v in phi.values()), "the inner steps must run without a graph"


@pytest.mark.parametrize("lam", [0.5, 2.0, 10.0])
def test_the_safeguard_converges_where_plain_steps_diverge(device, lam):
    """α (λ + L) = 3 > 2: plain proximal gradient descent diverges; the safeguarded step (at most α, at most
    1 / the curvature along the last step) reaches the closed-form φ*. With α (λ + L) < 1 it never binds."""
    model, task = linear_model(device), linear_task(device)
    theta = P.get_params(model)
    expected, _, hessian = closed_form(flat_linear(theta).detach(), task, lam)
    top = float(torch.linalg.eigvalsh(hessian).max()) + lam

    def distance(lr, safeguard, steps):
        phi = imaml.proximal_solution(model, F.mse_loss, theta, task, imaml.IMAML(lam, lr, steps, safeguard=safeguard))
        return float((flat_linear(phi) - expected).norm())

    start = float((flat_linear(theta).detach() - expected).norm())
    assert distance(3 / top, False, 50) > 1e3 * start
    assert distance(3 / top, True, 400) < 1e-8
    for steps in (1, 7, 40):
        assert distance(0.9 / top, True, steps) == pytest.approx(distance(0.9 / top, False, steps), rel=1e-9, abs=1e-15)


def test_the_safeguard_rejects_an_overshooting_first_step(device):
    """α (λ + L) = 20: the first step from θ overshoots; the second gradient evaluation measures the curvature
    along it, rejects it and steps again from θ with 1 / L̂ (a descent step on a quadratic), so after two steps
    the proximal objective is below θ's, where plain steps have multiplied it."""
    model, task, lam = linear_model(device), linear_task(device), 2.0
    theta = P.get_params(model)
    _, _, hessian = closed_form(flat_linear(theta).detach(), task, lam)
    lr = 20 / (float(torch.linalg.eigvalsh(hessian).max()) + lam)

    def objective(safeguard, steps):
        phi = imaml.proximal_solution(model, F.mse_loss, theta, task, imaml.IMAML(lam, lr, steps, safeguard=safeguard))
        with torch.no_grad():
            return float(F.mse_loss(P.forward(model, phi, task.x_support), task.y_support)
                         + lam / 2 * sum(((phi[k] - theta[k]) ** 2).sum() for k in phi))

    with torch.no_grad():
        start = float(F.mse_loss(P.forward(model, theta, task.x_support), task.y_support))
    assert objective(True, 1) == objective(False, 1) > 10 * start  # one step: nothing measured yet
    assert objective(False, 2) > 100 * start
    assert objective(True, 2) < start


@pytest.mark.parametrize("lam", [0.5, 2.0, 10.0])
def test_implicit_meta_gradient_matches_the_closed_form(device, lam):
    model = linear_model(device)
    tasks = [linear_task(device, seed=s) for s in (1, 2)]
    batch = batch_of(*tasks)
    theta = P.get_params(model)
    flat = flat_linear(theta).detach()
    expected = sum(closed_form(flat, t, lam)[1] for t in tasks) / 2
    expected_loss = sum(F.mse_loss(augmented(t.x_query) @ closed_form(flat, t, lam)[0], t.y_query[:, 0])
                        for t in tasks) / 2
    settings = imaml.IMAML(lam=lam, lr=1 / (8 + lam), steps=600, cg_steps=4)  # 4 unknowns: CG is exact in 4
    loss, residual = imaml.meta_backward(model, theta, batch, F.mse_loss, settings)
    torch.testing.assert_close(flat_linear({k: v.grad for k, v in theta.items()}), expected, rtol=0, atol=1e-8)
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=1e-8)
    assert residual < 1e-10


def test_the_closed_form_inner_solution_plugs_in(device):
    """With φ* given exactly (``solver``), the implicit gradient is exact to rounding."""
    model, task, lam = linear_model(device), linear_task(device, seed=3), 1.5
    theta = P.get_params(model)

    def solver(params, t):
        phi = closed_form(flat_linear(params).detach(), t, lam)[0]
        return {"weight": phi[:3].reshape(1, 3), "bias": phi[3:]}

    loss, residual = imaml.meta_backward(model, theta, batch_of(task), F.mse_loss, imaml.IMAML(lam, cg_steps=4),
                                         solver=solver)
    expected = closed_form(flat_linear(theta).detach(), task, lam)[1]
    torch.testing.assert_close(flat_linear({k: v.grad for k, v in theta.items()}), expected, rtol=0, atol=1e-11)
    assert residual < 1e-12


def small_mlp(device):
    torch.manual_seed(0)
    return MLP((1, 8, 8, 1), init="torch").double().to(device)


def sine_task(device, seed=0):
    return sample_sine_tasks(1, 10, 10, torch.Generator().manual_seed(seed), device, torch.float64)


def test_cg_against_an_explicit_hessian_solve_on_an_mlp(device):
    """A non-linear model: CG's (I + H/λ)⁻¹ g equals the dense solve with the full Hessian, and the
    residual it reports is the true relative residual ‖b − A v‖ / ‖b‖; it shrinks with the CG steps. (Plain
    steps of 0.05: the safeguarded ones stop at a φ where I + H/λ is indefinite, which CG cannot solve.)"""
    model, task, lam = small_mlp(device), sine_task(device)[0], 2.0
    phi = imaml.proximal_solution(model, F.mse_loss, P.get_params(model), task,
                                  imaml.IMAML(lam, 0.05, 50, safeguard=False))
    names, shapes = list(phi), [v.shape for v in phi.values()]

    def unflat(vec):
        return dict(zip(names, (t.reshape(s) for t, s in zip(vec.split([s.numel() for s in shapes]), shapes))))

    def support_loss(vec):
        return F.mse_loss(P.forward(model, unflat(vec), task.x_support), task.y_support)

    flat_phi = P.flatten(phi)
    hessian = torch.autograd.functional.hessian(support_loss, flat_phi)
    g = torch.randn(flat_phi.shape, dtype=torch.float64, device=device)
    matrix = torch.eye(len(g), dtype=g.dtype, device=device) + hessian / lam
    expected = torch.linalg.solve(matrix, g)
    residuals = []
    for steps in (2, 5, 200):
        out = imaml.implicit_gradient(model, F.mse_loss, phi, task, unflat(g), imaml.IMAML(lam, cg_steps=steps))
        v = P.flatten(out.solution)
        true = float(torch.linalg.norm(g - matrix @ v) / torch.linalg.norm(g))
        assert out.residual == pytest.approx(true, rel=1e-4, abs=1e-12)
        residuals.append(out.residual)
    torch.testing.assert_close(v, expected, rtol=0, atol=1e-8)
    assert residuals[0] > residuals[1] > residuals[2] and residuals[2] < 1e-10


def test_large_lambda_tends_to_the_plain_query_gradient(device):
    """λ → ∞: φ* → θ and (I + H/λ)⁻¹ → I, so the meta-gradient is ∇L_query(θ) (first-order limit)."""
    model, task = small_mlp(device), sine_task(device, seed=1)
    theta = P.get_params(model)
    plain = torch.autograd.grad(F.mse_loss(P.forward(model, theta, task.x_query[0]), task.y_query[0]),
                                list(theta.values()))
    plain_flat = torch.cat([g.reshape(-1) for g in plain])
    errors = []
    for lam in (1e2, 1e4, 1e6):
        model.zero_grad()
        imaml.meta_backward(model, theta, task, F.mse_loss, imaml.IMAML(lam, lr=1 / (lam + 10), steps=5))
        got = torch.cat([v.grad.reshape(-1) for v in theta.values()])
        errors.append(float((got - plain_flat).norm()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4 * float(plain_flat.norm())


@pytest.mark.parametrize("batched", [False, True])
def test_proximal_adaptation_under_vmap_equals_the_loop(batched):
    """``evaluate``'s batched path adapts as the loop does, the safeguard's per-task state included (with
    α = 0.5 it binds: the steps differ from plain ones); plain steps (no safeguard) equal steps by hand."""
    from mamlkit.evaluation import Protocol, evaluate

    model, tasks = small_mlp("cpu"), sample_sine_tasks(4, 5, 10, torch.Generator().manual_seed(2), "cpu",
                                                      torch.float64)
    theta = P.get_params(model)
    scores = {}
    for lr, safeguard in ((0.5, True), (0.5, False), (0.05, False)):
        protocol = Protocol(imaml.proximal_loop(theta, 2.0, lr, 3, safeguard))
        loop = evaluate(model, theta, tasks, F.mse_loss, protocol, batched=False).per_task
        other = evaluate(model, theta, tasks, F.mse_loss, protocol, batched=batched).per_task
        torch.testing.assert_close(other, loop, rtol=1e-10, atol=1e-12)
        scores[lr, safeguard] = loop
    assert (scores[0.5, True][:, -1] - scores[0.5, False][:, -1]).abs().max() > 1e-3
    loop = scores[0.05, False]
    by_hand = []
    for task in tasks:
        phi = dict(theta)
        for _ in range(3):
            g = torch.autograd.grad(F.mse_loss(P.forward(model, phi, task.x_support), task.y_support),
                                    list(phi.values()))
            phi = {k: (v - 0.05 * (gk + 2.0 * (v - theta[k]))).detach().requires_grad_()
                   for (k, v), gk in zip(phi.items(), g)}
        by_hand.append(F.mse_loss(P.forward(model, phi, task.x_query), task.y_query).detach())
    torch.testing.assert_close(loop[:, -1], torch.stack(by_hand), rtol=1e-10, atol=1e-12)


def test_memory_does_not_grow_with_inner_steps():
    """Peak bytes autograd keeps alive for one meta-gradient: flat for iMAML, growing for MAML."""
    model = MLP(init="torch").double()
    theta = P.get_params(model)
    tasks = sample_sine_tasks(2, 10, 10, torch.Generator().manual_seed(0), "cpu", torch.float64)

    def imaml_cost(k):
        return measure_cost(lambda: imaml.meta_backward(model, theta, tasks, F.mse_loss, imaml.IMAML(steps=k)),
                            repeats=1)[1]

    def maml_cost(k):
        return measure_cost(lambda: maml.maml_loss(model, theta, tasks, F.mse_loss, 0.01, k).backward(),
                            repeats=1)[1]

    peaks = [imaml_cost(k) for k in (1, 5, 20)]
    assert peaks[0] > 0 and peaks[0] == peaks[1] == peaks[2], peaks
    maml_peaks = [maml_cost(k) for k in (1, 5, 20)]
    assert maml_peaks[0] < maml_peaks[1] < maml_peaks[2]
    assert maml_peaks[2] > 5 * peaks[2]


@pytest.mark.parametrize("kwargs, match", [
    (dict(lam=0.0), "lambda must be a finite number > 0"),
    (dict(lam=-1.0), "lambda must be a finite number > 0"),
    (dict(lam=float("inf")), "lambda must be a finite number > 0"),
    (dict(lam=float("nan")), "lambda must be a finite number > 0"),
    (dict(lam=True), "lambda must be a finite number > 0"),
    (dict(cg_steps=0), "cg_steps must be an integer >= 1"),
    (dict(cg_steps=2.5), "cg_steps must be an integer >= 1"),
    (dict(cg_tol=1.0), "cg_tol must be a number in"),
    (dict(cg_tol=-0.1), "cg_tol must be a number in"),
    (dict(lr=0.0), "inner_lr must be a number > 0"),
    (dict(steps=0), "inner_steps must be an integer >= 1"),
])
def test_bad_settings_are_refused_in_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        imaml.IMAML(**kwargs)
    assert "\n" not in str(info.value)


def test_a_bad_lambda_is_refused_by_the_functions_too():
    model, task = small_mlp("cpu"), sine_task("cpu")[0]
    theta = P.get_params(model)
    with pytest.raises(ValueError, match="lambda"):
        imaml.proximal_solution(model, F.mse_loss, theta, task, imaml.IMAML(-2.0, 0.01, 3))
    with pytest.raises(ValueError, match="cg_steps"):
        imaml.implicit_gradient(model, F.mse_loss, theta, task, theta, imaml.IMAML(2.0, cg_steps=0))


@pytest.mark.parametrize("lam, cg_tol", [(1.0, 0.0), (10.0, 1e-3)])
def test_batched_equals_the_loop(device, lam, cg_tol):
    """All tasks under ``vmap`` (HVPs by vjp of the gradient, CG frozen by masks) = the per-task loop. With
    λ = 1 some of these tasks' I + H/λ is indefinite (H has eigenvalues below −1 at this φ): CG stops at
    the first direction of non-positive curvature, in both paths alike, and reports a large residual."""
    model = small_mlp(device)
    theta = P.get_params(model)
    tasks = sample_sine_tasks(5, 10, 10, torch.Generator().manual_seed(4), device, torch.float64)
    settings = imaml.IMAML(lam=lam, lr=0.05, steps=4, cg_steps=20 if cg_tol else 6, cg_tol=cg_tol)
    out = {}
    for batched in (False, True):
        model.zero_grad()
        loss, residual = imaml.meta_backward(model, theta, tasks, F.mse_loss, settings, scale=0.5, batched=batched)
        out[batched] = loss, residual, [v.grad.clone() for v in theta.values()]
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-12, atol=1e-12)
    assert out[True][1] == pytest.approx(out[False][1], rel=1e-6, abs=1e-14)
    for a, b in zip(out[True][2], out[False][2]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    if cg_tol:
        assert out[False][1] <= cg_tol
    else:
        assert out[False][1] > 0.1  # an indefinite system: the residual says the solve failed


def test_cg_on_an_indefinite_system_returns_its_best_iterate():
    """Far from a minimum I + H/λ can be indefinite: CG may then blow up; it returns the iterate with the
    smallest residual (never worse than v = 0, residual 1) and reports that residual truthfully."""
    matrix = torch.diag(torch.tensor([1.0, -0.9, 3.0, 0.05], dtype=torch.float64))
    b = [torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)]
    v, residual, _ = imaml.conjugate_gradient(lambda p: [matrix @ p[0]], b, steps=4)
    true = float(torch.linalg.norm(b[0] - matrix @ v[0]) / torch.linalg.norm(b[0]))
    assert float(residual) == pytest.approx(true, rel=1e-9) and true <= 1.0
    spd = torch.diag(torch.tensor([1.0, 0.5, 3.0, 2.0], dtype=torch.float64))
    v, residual, iterations = imaml.conjugate_gradient(lambda p: [spd @ p[0]], b, steps=4)
    torch.testing.assert_close(v[0], torch.linalg.solve(spd, b[0]), rtol=0, atol=1e-12)
    assert float(residual) < 1e-12 and int(iterations) == 4


# Training, checkpoints, evaluation, command line ---------------------------------------------------------

FAST = dict(iterations=30, meta_batch_size=4, val_every=10, val_tasks=8, checkpoint_every=10)


@pytest.mark.parametrize("batched", [False, True])
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, monkeypatch, batched):
    from mamlkit import training
    from mamlkit.config import Config

    config = Config(algo="imaml", seed=1, batched=batched, inner_steps=3, **FAST)
    whole = training.meta_train(config, progress=False)
    saved, resumed = crash_and_resume(config, tmp_path / "run.pt", monkeypatch)
    assert saved["iteration"] == 20 and saved["config"]["imaml_lambda"] == 10.0 and saved["config"]["cg_steps"] == 5
    a, b = resumed.model.state_dict(), whole.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == whole.history
    residuals = whole.history["cg_residual"]  # one per history line: the largest relative CG residual since
    assert len(residuals) == len(whole.history["iteration"]) == 3 and all(0 <= r < 1 for r in residuals)


def test_a_run_is_evaluated_with_its_proximal_steps():
    from mamlkit import training
    from mamlkit.config import Config
    from mamlkit.evaluation import Protocol, evaluate

    run = training.meta_train(Config(algo="imaml", inner_steps=2, imaml_lambda=50.0, **dict(FAST, iterations=5)),
                              progress=False)
    tasks = sample_sine_tasks(6, 5, 20, torch.Generator().manual_seed(3))
    theta = P.get_params(run.model)
    got = training.evaluate_run(run, tasks, report=(0, 3), inner_steps=3)
    expected = evaluate(run.model, theta, tasks, F.mse_loss, Protocol(imaml.proximal_loop(theta, 50.0, 0.01, 3),
                                                                      report=(0, 3)))
    torch.testing.assert_close(got.per_task, expected.per_task)
    plain = evaluate(run.model, theta, tasks, F.mse_loss, Protocol.sgd(0.01, 3, report=(0, 3)))
    assert not torch.allclose(got.per_task[:, 1], plain.per_task[:, 1])  # the proximal term is not plain SGD


def test_cli_trains_and_evaluates_imaml(tmp_path, capsys):
    from mamlkit.__main__ import main

    out = tmp_path / "imaml.pt"
    assert main(["train", "--algo", "imaml", "--iterations", "6", "--imaml-lambda", "5", "--cg-steps", "3",
                 "--inner-steps", "2", "--meta-batch-size", "3", "--val-every", "3", "--val-tasks", "4",
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    state = torch.load(out, weights_only=True)
    assert (state["config"]["imaml_lambda"], state["config"]["cg_steps"]) == (5.0, 3)
    assert len(state["history"]["cg_residual"]) == len(state["history"]["iteration"]) == 1
    assert main(["evaluate", str(out), "--tasks", "10", "--steps", "1", "5"]) == 0
    assert "| imaml |" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--algo", "imaml", "--cg-steps", "0"], "cg_steps must be an integer >= 1"),
    (["--algo", "imaml", "--imaml-lambda", "-1"], "imaml lambda must be a finite number > 0"),
    (["--algo", "maml", "--cg-steps", "3"], "(--cg-steps) is an option of algo 'imaml'"),
    (["--algo", "anil", "--imaml-lambda", "2"], "(--imaml-lambda) is an option of algo 'imaml'"),
])
def test_cli_refuses_bad_imaml_settings_in_one_line(tmp_path, capsys, args, message):
    from mamlkit.__main__ import main

    assert main(["train", *args, "--iterations", "1", "--out", str(tmp_path / "x.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()
