"""Meta-SGD, ANIL and MAML++ against finite differences and MAML as the oracle (float64)."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from test_training import crash_and_resume
from torch import nn

from mamlkit import anil, families, maml, mamlpp, metasgd, runs, training
from mamlkit import params as P
from mamlkit.__main__ import main
from mamlkit.checkpoint import load_checkpoint, save_checkpoint
from mamlkit.config import Config
from mamlkit.evaluation import Protocol, evaluate
from mamlkit.inner import SGD, InnerLoop, StepwiseSGD
from mamlkit.models import MLP, Conv4
from mamlkit.tasks import Task, sample_sine_tasks


def small_mlp(device, seed=0):
    torch.manual_seed(seed)
    return MLP((1, 8, 8, 1), init="torch").double().to(device)


def sine_batch(n, device, shots=6, queries=6, seed=0):
    return sample_sine_tasks(n, shots, queries, torch.Generator().manual_seed(seed), device, torch.float64)


def grads(loss, tensors):
    return torch.autograd.grad(loss, list(tensors))


def assert_all_close(a, b, tol=1e-12):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


def finite_difference_check(loss_of, tensors: dict, n_checks=6, eps=1e-6, seed=0):
    """Autograd's gradient of ``loss_of()`` w.r.t. ``tensors`` against central differences at a few elements."""
    analytic = dict(zip(tensors, grads(loss_of(), tensors.values())))
    g = torch.Generator().manual_seed(seed)
    for name in tensors:
        t = tensors[name]
        for _ in range(n_checks // len(tensors) + 1):
            i = int(torch.randint(t.numel(), (1,), generator=g))
            values = []
            for shift in (eps, -2 * eps, eps):  # the inner loop needs autograd: only the shift is no_grad
                with torch.no_grad():
                    t.view(-1)[i] += shift
                values.append(float(loss_of().detach()))
            up, down = values[:2]
            assert analytic[name].reshape(-1)[i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9)


# Meta-SGD -----------------------------------------------------------------------------------------------

def test_metasgd_meta_gradient_wrt_alpha_matches_finite_differences(device):
    model, tasks = small_mlp(device), sine_batch(3, device)
    params = P.get_params(model)
    alpha = metasgd.init_alpha(params, 0.05)
    with torch.no_grad():  # a different α per element
        for v in alpha.values():
            v.mul_(torch.rand(v.shape, dtype=v.dtype, device=v.device) * 2)
    finite_difference_check(lambda: metasgd.metasgd_loss(model, params, alpha, tasks, F.mse_loss, steps=2), alpha)


def test_metasgd_with_alpha_frozen_at_a_scalar_equals_maml(device):
    model, tasks = small_mlp(device), sine_batch(3, device)
    params = P.get_params(model)
    alpha = metasgd.init_alpha(params, 0.03)
    ours = metasgd.metasgd_loss(model, params, alpha, tasks, F.mse_loss, steps=2)
    theirs = maml.maml_loss(model, params, tasks, F.mse_loss, 0.03, 2)
    torch.testing.assert_close(ours, theirs, rtol=1e-14, atol=0)
    g_ours = grads(ours, [*params.values(), *alpha.values()])
    assert_all_close(g_ours[:len(params)], grads(theirs, params.values()))
    # and Σ ∂L/∂α over all elements is dL/dα of MAML's scalar α (central difference)
    eps = 1e-6
    up, down = (float(maml.maml_loss(model, params, tasks, F.mse_loss, 0.03 + s, 2).detach()) for s in (eps, -eps))
    assert float(sum(g.sum() for g in g_ours[len(params):])) == pytest.approx((up - down) / (2 * eps), rel=1e-6)


def test_metasgd_batched_equals_loop(device):
    model, tasks = small_mlp(device), sine_batch(4, device)
    params = P.get_params(model)
    alpha = metasgd.init_alpha(params, 0.05)
    loop = metasgd.metasgd_loss(model, params, alpha, tasks, F.mse_loss, steps=2)
    batched = metasgd.metasgd_loss(model, params, alpha, tasks, F.mse_loss, steps=2, batched=True)
    everything = [*params.values(), *alpha.values()]
    assert_all_close(grads(loop, everything), grads(batched, everything), tol=1e-10)


# ANIL ---------------------------------------------------------------------------------------------------

def test_anil_head_is_the_last_layer_unless_the_model_says_otherwise():
    assert anil.head_names(MLP((1, 8, 8, 1))) == ["4.weight", "4.bias"]
    conv = Conv4(5, channels=4)
    assert anil.head_names(conv) == ["13.weight", "13.bias"] and isinstance(conv[13], nn.Linear)
    mlp = MLP((1, 8, 8, 1))
    mlp.anil_head = ("2.weight", "2.bias", "4.weight", "4.bias")
    assert anil.head_names(mlp) == list(mlp.anil_head)
    mlp.anil_head = "5.weight"
    with pytest.raises(ValueError, match="anil_head names.*5.weight"):
        anil.head_names(mlp)


def test_anil_inner_loop_adapts_the_head_on_the_unchanged_body_features(device):
    """Two inner steps of ANIL equal two SGD steps of the head alone on features computed once by the
    body: if the first step changed the body, the second step's features (and head) would differ."""
    model, tasks = small_mlp(device), sine_batch(1, device)
    task = tasks[0]
    head, body = anil.split(model)
    body_before = {k: v.detach().clone() for k, v in body.items()}
    with anil.head_only(model):
        adapted, _ = InnerLoop.sgd(0.5, 2).adapt(model, F.mse_loss, head, task.x_support, task.y_support)
    assert adapted.keys() == head.keys() == {"4.weight", "4.bias"}
    assert all(torch.equal(v, body_before[k]) for k, v in P.get_params(model).items() if k in body)
    features = nn.Sequential(*list(model)[:4])(task.x_support).detach()
    w, b = model[4].weight.detach().clone(), model[4].bias.detach().clone()
    for _ in range(2):
        w.requires_grad_(), b.requires_grad_()
        gw, gb = torch.autograd.grad(F.mse_loss(features @ w.T + b, task.y_support), [w, b])
        w, b = (w - 0.5 * gw).detach(), (b - 0.5 * gb).detach()
    torch.testing.assert_close(adapted["4.weight"], w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(adapted["4.bias"], b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="parameter dict has no"):  # outside head_only the check is back
        P.forward(model, head, task.x_query)


def test_anil_with_an_identity_body_equals_maml_on_the_head(device):
    torch.manual_seed(1)
    tasks = Task(*(torch.randn(3, 6, d, dtype=torch.float64, device=device) for d in (3, 1, 3, 1)))
    body = nn.Linear(3, 3).double().to(device)
    with torch.no_grad():
        body.weight.copy_(torch.eye(3)), body.bias.zero_()
    head_model = nn.Linear(3, 1).double().to(device)
    model = nn.Sequential(body, nn.Linear(3, 1).double().to(device))
    model[1].load_state_dict(head_model.state_dict())
    inner = InnerLoop.sgd(0.1, 2)
    head = {"1.weight": model[1].weight, "1.bias": model[1].bias}
    ours = anil.anil_loss(model, head, tasks, F.mse_loss, inner)
    theirs = maml.maml_loss(head_model, P.get_params(head_model), tasks, F.mse_loss, 0.1, 2)
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=0)
    g = grads(ours, [*head.values(), body.weight])
    assert_all_close(g[:2], grads(theirs, P.get_params(head_model).values()))
    assert g[2].abs().sum() > 0  # the body learns in the outer loop
    adapting_all = maml.maml_loss(model, P.get_params(model), tasks, F.mse_loss, 0.1, 2)
    assert abs(float((adapting_all - ours).detach())) > 1e-6  # MAML on the whole model is something else


def test_anil_batched_equals_loop(device):
    model, tasks = small_mlp(device), sine_batch(4, device)
    params = P.get_params(model)
    results = []
    for batched in (False, True):
        model.zero_grad(set_to_none=True)
        loss = anil.meta_backward(model, tasks, F.mse_loss, InnerLoop.sgd(0.1, 2), batched)
        results.append((loss, [params[k].grad.clone() for k in params]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    assert_all_close(results[0][1], results[1][1], tol=1e-10)
    assert results[0][1][0].abs().sum() > 0  # the body's gradient arrived


# MAML++ -------------------------------------------------------------------------------------------------

def test_msl_weights_sum_to_one_and_anneal_to_the_last_step():
    steps, n = 5, 100
    assert mamlpp.msl_weights(steps, 0, n) == pytest.approx([0.2] * 5)
    previous_last = 0.0
    for it in range(0, 2 * n, 7):
        w = mamlpp.msl_weights(steps, it, n)
        assert sum(w) == pytest.approx(1.0, abs=1e-12) and min(w) >= 0
        assert w[-1] >= previous_last and all(x == w[0] for x in w[:-1])
        previous_last = w[-1]
        if it < n:
            assert w[0] >= mamlpp.MIN_WEIGHT / steps - 1e-15
    assert mamlpp.msl_weights(steps, 50, n)[0] == pytest.approx(0.2 - 50 / (5 * 100))
    assert mamlpp.msl_weights(steps, n, n) == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert mamlpp.msl_weights(1, 0, n) == [1.0]


def test_mamlpp_with_every_switch_off_equals_maml(device):
    model, tasks = small_mlp(device), sine_batch(3, device)
    params = P.get_params(model)
    schedule = mamlpp.Schedule.at(10, 3, 0.05)
    ours = mamlpp.mamlpp_loss(model, params, tasks, F.mse_loss, schedule)
    theirs = maml.maml_loss(model, params, tasks, F.mse_loss, 0.05, 3)
    torch.testing.assert_close(ours, theirs, rtol=1e-14, atol=0)
    assert_all_close(grads(ours, params.values()), grads(theirs, params.values()))


def test_msl_alone_is_the_weighted_sum_of_maml_losses_after_each_step(device):
    model, tasks = small_mlp(device), sine_batch(3, device)
    params = P.get_params(model)
    schedule = mamlpp.Schedule.at(30, 3, 0.05, msl=100)
    assert schedule.weights[0] > 0
    ours = mamlpp.mamlpp_loss(model, params, tasks, F.mse_loss, schedule)
    theirs = sum(w * maml.maml_loss(model, params, tasks, F.mse_loss, 0.05, s + 1)
                 for s, w in enumerate(schedule.weights))
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=0)
    assert_all_close(grads(ours, params.values()), grads(theirs, params.values()))


def test_lslr_gradient_wrt_per_step_alpha_matches_finite_differences(device):
    model, tasks = small_mlp(device), sine_batch(3, device)
    params = P.get_params(model)
    lslr = mamlpp.init_lslr(params, 0.05, 3)
    with torch.no_grad():
        for v in lslr.values():
            v.mul_(torch.rand(3, dtype=v.dtype, device=v.device) * 2)
    schedule = mamlpp.Schedule.at(20, 3, 0.05, lslr=lslr, msl=100)
    finite_difference_check(lambda: mamlpp.mamlpp_loss(model, params, tasks, F.mse_loss, schedule), lslr, n_checks=12)


def test_lslr_uses_each_steps_alpha_and_the_last_one_past_the_end():
    params = {"w": torch.ones(2, dtype=torch.float64)}
    g = {"w": torch.ones(2, dtype=torch.float64)}
    opt = StepwiseSGD({"w": torch.tensor([0.1, 0.2], dtype=torch.float64)})
    assert [float(opt.at(s).update(params, g)[0]["w"][0]) for s in range(4)] == pytest.approx([0.9, 0.8, 0.8, 0.8])



def test_a_negative_learned_step_size_is_used_as_zero_and_gets_no_gradient():
    """LSLR's α below 0 would climb the support loss (the sine runs diverged there): it stops adapting instead."""
    params = {"w": torch.ones(2, dtype=torch.float64)}
    g = {"w": torch.ones(2, dtype=torch.float64)}
    alpha = torch.tensor([-0.3, 0.2], dtype=torch.float64, requires_grad=True)
    opt = StepwiseSGD({"w": alpha})
    assert [float(opt.at(s).update(params, g)[0]["w"][0]) for s in range(2)] == pytest.approx([1.0, 0.8])
    moved = sum(opt.at(s).update(params, g)[0]["w"].sum() for s in range(2))
    (grad,) = torch.autograd.grad(moved, alpha)
    assert grad.tolist() == pytest.approx([0.0, -2.0])

@pytest.mark.parametrize("iteration,first_order", [(4, True), (5, False)])
def test_doa_is_fomaml_before_and_maml_after(device, iteration, first_order):
    model, tasks = small_mlp(device), sine_batch(3, device)
    params = P.get_params(model)
    schedule = mamlpp.Schedule.at(iteration, 2, 0.05, first_order_iterations=5)
    assert schedule.loop.first_order is first_order
    ours = grads(mamlpp.mamlpp_loss(model, params, tasks, F.mse_loss, schedule), params.values())
    for order in (True, False):
        theirs = grads(maml.maml_loss(model, params, tasks, F.mse_loss, 0.05, 2, first_order=order), params.values())
        same = all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(ours, theirs))
        assert same is (order == first_order)


def test_mamlpp_batched_equals_loop(device):
    model, tasks = small_mlp(device), sine_batch(4, device)
    params = P.get_params(model)
    lslr = mamlpp.init_lslr(params, 0.05, 2)
    schedule = mamlpp.Schedule.at(3, 2, 0.05, lslr=lslr, msl=10)
    everything = [*params.values(), *lslr.values()]
    loop = grads(mamlpp.mamlpp_loss(model, params, tasks, F.mse_loss, schedule), everything)
    batched = grads(mamlpp.mamlpp_loss(model, params, tasks, F.mse_loss, schedule, batched=True), everything)
    assert_all_close(loop, batched, tol=1e-10)


def test_sgd_with_a_dict_of_scalars_equals_sgd():
    params = {"w": torch.tensor([1.0, 2.0])}
    g = {"w": torch.tensor([0.5, 0.5])}
    assert torch.equal(SGD({"w": torch.tensor(0.1)}).update(params, g)[0]["w"], SGD(0.1).update(params, g)[0]["w"])


# Training, checkpoints, evaluation, command line --------------------------------------------------------

FAST = dict(iterations=30, meta_batch_size=4, val_every=10, val_tasks=8, checkpoint_every=10)
VARIANTS = ["metasgd", "anil", "mamlpp"]


def state_of(run):
    return {**{k: v.detach().clone() for k, v in run.model.state_dict().items()},
            **{f"inner.{k}": v.detach().clone() for k, v in run.inner_params.items()}}


@pytest.mark.parametrize("algo", VARIANTS)
@pytest.mark.parametrize("batched", [False, True])
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, monkeypatch, algo, batched):
    config = Config(algo=algo, seed=1, batched=batched, **FAST,
                    **(dict(msl_iterations=20, first_order_iterations=15) if algo == "mamlpp" else {}))
    whole = training.meta_train(config, progress=False)
    out = tmp_path / "run.pt"
    saved, resumed = crash_and_resume(config, out, monkeypatch)
    assert saved["iteration"] == 20 and saved["inner_params"].keys() == whole.inner_params.keys()
    a, b = state_of(resumed), state_of(whole)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == whole.history
    if algo != "anil":  # the learned step sizes moved from inner_lr
        assert any(not torch.all(v == 0.01) for v in whole.inner_params.values())


def test_the_learned_inner_params_are_what_evaluation_uses(tmp_path):
    tasks = families.get("sinusoid").fixed_tasks("val", 10, 5)
    run = training.meta_train(Config(algo="metasgd", **FAST), progress=False)
    val = families.get("sinusoid").fixed_tasks("val", FAST["val_tasks"], 5)
    assert run.history["val_metric"][-1] == float(training.evaluate_run(run, val, inner_steps=1).mean[-1])
    with torch.no_grad():
        for v in run.inner_params.values():
            v.zero_()
    result = training.evaluate_run(run, tasks, inner_steps=3)
    assert torch.equal(result.per_task[:, 0], result.per_task[:, 3])  # α = 0: fine-tuning changes nothing
    run = training.meta_train(Config(algo="mamlpp", **FAST), progress=False)
    with torch.no_grad():
        for v in run.inner_params.values():
            v[0] = 0.0  # step 1 does nothing, the later steps do
    result = training.evaluate_run(run, tasks, inner_steps=3)
    assert torch.equal(result.per_task[:, 0], result.per_task[:, 1])
    assert not torch.equal(result.per_task[:, 1], result.per_task[:, 2])


def test_anil_evaluation_fine_tunes_the_head_only():
    tasks = families.get("sinusoid").fixed_tasks("val", 10, 5)
    run = training.meta_train(Config(algo="anil", **FAST), progress=False)
    ours = training.evaluate_run(run, tasks, inner_steps=2).per_task
    head, _ = anil.split(run.model)
    with anil.head_only(run.model):
        expected = evaluate(run.model, head, tasks, F.mse_loss, Protocol.sgd(0.01, 2)).per_task
    everything = evaluate(run.model, P.get_params(run.model), tasks, F.mse_loss, Protocol.sgd(0.01, 2)).per_task
    assert torch.equal(ours, expected) and not torch.equal(ours[:, 2], everything[:, 2])


def test_checkpoints_without_inner_params_still_load(tmp_path):
    out = tmp_path / "old.pt"
    training.meta_train(Config(**FAST), out, progress=False)
    state = load_checkpoint(out)
    del state["inner_params"]  # as written before learned inner parameters existed
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, out)
    assert runs.load_run(out).inner_params == {}
    out = tmp_path / "metasgd.pt"
    training.meta_train(Config(algo="metasgd", **FAST), out, progress=False)
    assert training.evaluate_checkpoint(out, 5, "cpu")["protocol"]["inner_lr"] == "learned"
    with pytest.raises(ValueError, match="learned step sizes: drop --inner-lr"):
        training.evaluate_checkpoint(out, 5, "cpu", inner_lr=0.1)


@pytest.mark.parametrize("options,message", [
    (dict(algo="maml", msl=False), "msl=False .--no-msl. is an option of algo 'mamlpp'"),
    (dict(algo="anil", lslr=False), "--no-lslr"),
    (dict(algo="fomaml", first_order_iterations=3), "--first-order-iterations"),
    (dict(algo="maml", anneal=False), "--no-anneal.*reptile"),
    (dict(algo="mamlpp", msl=False, msl_iterations=3), "drop --msl-iterations or --no-msl"),
])
def test_an_option_of_another_algorithm_is_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Config(**options).resolved()


def test_mamlpp_defaults_and_switches():
    cfg = Config(algo="mamlpp", iterations=300).resolved()
    assert (cfg.lslr, cfg.msl, cfg.doa, cfg.msl_iterations, cfg.first_order_iterations) == (True, True, True, 30, 100)
    off = Config(algo="mamlpp", iterations=300, lslr=False, msl=False, doa=False).resolved()
    assert (off.msl_iterations, off.first_order_iterations) == (None, None)
    assert runs.new_run(replace(off, **FAST)).inner_params == {}


def test_cli_trains_and_evaluates_anil(tmp_path, capsys):
    out = tmp_path / "anil.pt"
    assert main(["train", "--algo", "anil", "--task", "sinusoid", "--iterations", "20", "--out", str(out),
                 "--no-progress", "--device", "cpu", "--val-every", "10", "--meta-batch-size", "4"]) == 0
    assert main(["evaluate", str(out), "--tasks", "10", "--steps", "1"]) == 0
    assert "| anil |" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--algo", "maml", "--no-msl"], "--no-msl) is an option of algo 'mamlpp'"),
    (["--algo", "metasgd", "--no-doa"], "--no-doa) is an option of algo 'mamlpp'"),
    (["--no-anneal"], "--no-anneal) is an option of algo 'reptile'"),
    (["--algo", "fomaml", "--fresh-inner-state"], "--fresh-inner-state is an option of --algo reptile"),
])
def test_cli_refuses_options_of_another_algorithm(tmp_path, capsys, args, message):
    assert main(["train", *args, "--iterations", "1", "--out", str(tmp_path / "x.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()


# MAML with derivative-order annealing (the default sine MAML) ---------------------------------------------------

def _trained(**options):
    from mamlkit.training import meta_train
    config = Config(iterations=4, val_every=4, val_tasks=2, init="maml", outer_schedule="constant", **options)
    return torch.cat([p.detach().flatten() for p in meta_train(config, progress=False).model.parameters()])


def test_maml_doa_is_fomaml_first_then_maml():
    fomaml, maml = _trained(algo="fomaml"), _trained(algo="maml", doa=False)
    assert not torch.allclose(fomaml, maml, atol=1e-6)  # the two differ on these iterations
    assert torch.allclose(_trained(algo="maml", doa=True, first_order_iterations=4), fomaml, atol=1e-6)
    assert torch.allclose(_trained(algo="maml", doa=True, first_order_iterations=0), maml, atol=1e-6)
    mixed = _trained(algo="maml", doa=True, first_order_iterations=2)
    assert not torch.allclose(mixed, fomaml, atol=1e-6) and not torch.allclose(mixed, maml, atol=1e-6)


def test_default_sine_maml_settings_and_old_checkpoints():
    cfg = Config(algo="maml").resolved()
    assert (cfg.init, cfg.outer_schedule, cfg.doa, cfg.first_order_iterations) == ("torch", "cosine", True, 23_333)
    assert [cfg.first_order_at(i) for i in (0, 23_332, 23_333)] == [True, True, False]
    assert not Config(task="omniglot", algo="maml").resolved().doa  # Omniglot MAML: the paper's, second order
    old = {k: v for k, v in cfg.to_dict().items() if k != "doa"} | {"init": "maml"}
    assert Config.from_dict(old).doa is False  # MAML checkpoints from before DOA trained second order throughout
    with pytest.raises(ValueError, match="option of algo 'mamlpp' or 'maml'"):
        Config(algo="fomaml", doa=False).resolved()
