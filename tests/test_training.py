"""The training loop: determinism, exact resume, divergence, checkpoints and evaluation."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

from mamlkit import families, runs, training
from mamlkit import params as P
from mamlkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mamlkit.config import Config
from mamlkit.divergence import TrainingDiverged
from mamlkit.evaluation import Protocol, evaluate
from mamlkit.inner import InnerLoop, by_name
from mamlkit.tasks import sine_test_tasks


def protocol(lr, steps, optimizer="sgd", **options):
    return Protocol(InnerLoop(by_name(optimizer, lr), steps), **options)


FAST = dict(iterations=30, meta_batch_size=4, val_every=10, val_tasks=8, checkpoint_every=10)


def final_params(run):
    return {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("algo", ["maml", "fomaml", "reptile", "pretrain"])
def test_same_seed_same_result(algo, device):
    a = training.meta_train(Config(algo=algo, seed=3, **FAST), device=device, progress=False)
    b = training.meta_train(Config(algo=algo, seed=3, **FAST), device=device, progress=False)
    assert_same(final_params(a), final_params(b))
    c = training.meta_train(Config(algo=algo, seed=4, **FAST), device=device, progress=False)
    assert not torch.equal(final_params(a)["0.weight"], final_params(c)["0.weight"])


KEPT = dict(algo="reptile", inner_optimizer="adam", inner_lr=0.01, keep_inner_state=True)  # Reptile code's Adam


@pytest.mark.parametrize("algo", ["maml", "reptile", "pretrain", "reptile-kept-adam", "maml-cosine"])
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, monkeypatch, algo):
    options = {"reptile-kept-adam": KEPT, "maml-cosine": dict(algo="maml", outer_schedule="cosine")}
    config = Config(seed=1, **FAST, **options.get(algo, {"algo": algo}))
    whole = training.meta_train(config, progress=False)
    out = tmp_path / "run.pt"
    saved, resumed = crash_and_resume(config, out, monkeypatch)
    assert saved["iteration"] == 20
    assert resumed.iteration == 30
    assert_same(final_params(resumed), final_params(whole))
    assert resumed.history == whole.history
    if whole.inner_state is not None:  # the inner Adam's state is part of the checkpoint
        assert resumed.inner_state.step == whole.inner_state.step == 30 * 10  # batched: + inner steps per outer step
        assert_same(resumed.inner_state.exp_avg_sq, whole.inner_state.exp_avg_sq)


def test_checkpoint_contents_and_safe_load(tmp_path):
    out = tmp_path / "m.pt"
    training.meta_train(Config(**FAST), out, progress=False)
    state = torch.load(out, weights_only=True)
    assert {"model", "optimizer", "rng", "iteration", "config", "history"} <= state.keys()
    assert state["iteration"] == 30 and state["config"]["algo"] == "maml" and state["config"]["inner_lr"] == 0.01
    assert oct(os.stat(out).st_mode & 0o777) != oct(0o600)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary files left behind
    model, config = runs.load_model(out)
    assert config.iterations == 30


def test_divergence_is_reported_and_the_checkpoint_kept(tmp_path):
    out = tmp_path / "good.pt"
    training.meta_train(Config(**FAST), out, progress=False)
    before = out.read_bytes()
    with pytest.raises(TrainingDiverged, match=r"iteration \d+.*inner-lr"):
        training.meta_train(Config(inner_lr=1e3, inner_steps=3, **FAST), out, progress=False)
    assert out.read_bytes() == before


def test_unreadable_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a mamlkit checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    good = save_checkpoint({"x": torch.ones(1)}, tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pt")


def test_cosine_outer_schedule():
    """β·(1 + cos(π t/T))/2 at the update after t of T iterations: β first, β/2 halfway, → 0 at the end;
    the optimizer really steps with it; constant is the default, and what an older checkpoint trained with."""
    cfg = Config(outer_schedule="cosine", iterations=100).resolved()
    assert [training.outer_lr(cfg, t) for t in (0, 50)] == pytest.approx([0.001, 0.0005])
    assert 0 < training.outer_lr(cfg, 99) < 1e-6
    constant = Config(algo="fomaml").resolved()  # the papers' (sine MAML's default is cosine, families.py)
    assert constant.outer_schedule == "constant" and training.outer_lr(constant, 99) == 0.001
    assert Config().resolved().outer_schedule == "cosine"
    run = training.meta_train(Config(**{**FAST, "iterations": 8}, outer_schedule="cosine"), progress=False)
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(training.outer_lr(run.config, 7))
    stored = run.config.to_dict()
    del stored["outer_schedule"]
    assert Config.from_dict(stored).outer_schedule == "constant"
    with pytest.raises(ValueError, match="outer_schedule"):
        Config(algo="reptile", outer_schedule="cosine").resolved()


@pytest.mark.parametrize("field,value", [("outer_schedule", "linear"), ("algo", "maml++"), ("task", "mnist"),
                                         ("inner_lr", 0.0), ("inner_steps", 0), ("shots", 0), ("meta_batch_size", 0)])
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=field.replace("_", ".") if field in ("algo", "task") else field):
        Config(**{field: value}).resolved()


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_evaluate_reports_mean_and_ci_and_batched_equals_loop(device, inner_optimizer):
    torch.manual_seed(0)
    model = families.get("sinusoid").model(Config().resolved()).to(device)
    tasks = sine_test_tasks(20, 5, 30, device=device)
    every = protocol(0.01, 3, inner_optimizer, chunk=7)  # three chunks, the last one short
    loop = evaluate(model, P.get_params(model), tasks, F.mse_loss, every, batched=False)
    batched = evaluate(model, P.get_params(model), tasks, F.mse_loss, every, batched=True)
    torch.testing.assert_close(batched.per_task, loop.per_task, rtol=1e-5, atol=1e-6)
    assert (loop.per_task[:, 3] != loop.per_task[:, 0]).all()
    assert loop.per_task.shape == (20, 4)
    with torch.no_grad():
        zero_step = ((model(tasks.x_query) - tasks.y_query) ** 2).mean((1, 2)).cpu()
    torch.testing.assert_close(loop.per_task[:, 0], zero_step)
    for path in (False, True):  # scoring only some steps gives the same numbers for them
        some = evaluate(model, P.get_params(model), tasks, F.mse_loss,
                        protocol(0.01, 3, inner_optimizer, chunk=7, report=(3, 0)), batched=path)
        assert some.steps == [0, 3]
        torch.testing.assert_close(some.per_task, loop.per_task[:, [0, 3]], rtol=1e-5, atol=1e-6)
    assert some.at(3) == pytest.approx(loop.at(3), rel=1e-5)
    with pytest.raises(ValueError, match="step 1 was not scored"):
        some.at(1)
    with pytest.raises(ValueError, match="must lie in 0..3"):
        evaluate(model, P.get_params(model), tasks, F.mse_loss, protocol(0.01, 3, report=(4,)))
    mean, ci = loop.at(2)
    column = loop.per_task[:, 2].double()
    assert mean == pytest.approx(float(column.mean()), rel=1e-6)
    assert ci == pytest.approx(1.96 * float(column.std()) / 20 ** 0.5, rel=1e-5)


@pytest.mark.parametrize("batched", [False, True])
def test_evaluation_fine_tunes_every_task_from_the_kept_inner_state(tmp_path, batched):
    """Each test task starts from the stored Adam state (unchanged by evaluation), as the Reptile code."""
    out = tmp_path / "kept.pt"
    run = training.meta_train(Config(seed=2, **{**FAST, "iterations": 5}, **KEPT), out, progress=False)
    state, model, params = run.inner_state, run.model, P.get_params(run.model)
    before = state.detach()
    tasks = sine_test_tasks(6, 5, 20)
    adam = protocol(0.01, 4, "adam")
    kept = evaluate(model, params, tasks, F.mse_loss, adam, state=state, batched=batched)
    assert state.step == before.step
    assert all(torch.equal(state.exp_avg_sq[k], before.exp_avg_sq[k]) for k in state.exp_avg_sq)
    for i in range(len(tasks)):
        one = evaluate(model, params, tasks[i: i + 1], F.mse_loss, adam, state=state, batched=False)
        torch.testing.assert_close(kept.per_task[i], one.per_task[0], rtol=1e-5, atol=1e-7)
    fresh = evaluate(model, params, tasks, F.mse_loss, adam, batched=batched)
    assert not torch.allclose(kept.per_task[:, 4], fresh.per_task[:, 4])
    saved = training.evaluate_checkpoint(out, 6, "cpu", inner_optimizer="adam", inner_lr=0.01, inner_steps=4)
    again = evaluate(model, params, run.family.fixed_tasks("test", 6, 5), F.mse_loss, adam, state=state)
    assert saved["mean"] == pytest.approx([float(v) for v in again.mean], rel=1e-6)


def test_short_maml_run_learns(tmp_path):
    """A short run beats the untrained initialisation after one inner step, by a margin."""
    val = sine_test_tasks(100, 5, 50, seed=families.SEEDS["val"])
    untrained = runs.new_run(Config(seed=0))
    before = evaluate(untrained.model, P.get_params(untrained.model), val, F.mse_loss, protocol(0.01, 1)).at(1)[0]
    run = training.meta_train(Config(iterations=1500, val_every=500, seed=0), progress=False)
    after = evaluate(run.model, P.get_params(run.model), val, F.mse_loss, protocol(0.01, 1)).at(1)[0]
    assert after < 0.8 * before, (before, after)
    assert json.dumps(run.history)  # history is plain data


def test_checkpoint_resumes_on_every_device(tmp_path, device):
    out = tmp_path / "cpu.pt"
    training.meta_train(Config(**{**FAST, "iterations": 10}), out, progress=False)
    run = training.meta_train(Config(**{**FAST, "iterations": 20}), out, device=device, resume=True, progress=False)
    assert run.iteration == 20 and next(run.model.parameters()).device.type == device.type


def crash_and_resume(config, out, monkeypatch, at: int = 25):
    """Train ``config`` into ``out`` until a crash at iteration ``at`` (a KeyboardInterrupt inside the step), then
    resume it to the end; return (the checkpoint the crash left, the resumed run)."""
    real_step = training.outer_step

    def crash(run, tasks, batched):
        if run.iteration == at:
            raise KeyboardInterrupt
        return real_step(run, tasks, batched)

    monkeypatch.setattr(training, "outer_step", crash)
    with pytest.raises(KeyboardInterrupt):
        training.meta_train(config, out, progress=False)
    monkeypatch.setattr(training, "outer_step", real_step)
    saved = load_checkpoint(out)
    return saved, training.meta_train(config, out, resume=True, progress=False)


def test_wall_time_is_recorded_per_history_line_and_carried_over_a_resume(tmp_path):
    out = tmp_path / "run.pt"
    first = training.meta_train(Config(**{**FAST, "iterations": 20}), out, progress=False)
    assert len(first.wall_seconds) == len(first.history["iteration"]) == 2
    assert 0 < first.wall_seconds[0] <= first.wall_seconds[1]
    state = load_checkpoint(out)
    state["wall_seconds"] = state["wall_seconds"][:1]  # a line without it (as a checkpoint from before): NaN
    save_checkpoint(state, out)
    resumed = training.meta_train(Config(**FAST), out, resume=True, progress=False)
    seconds = resumed.wall_seconds
    assert len(seconds) == len(resumed.history["iteration"]) == 3
    assert seconds[1] != seconds[1] and seconds[2] >= seconds[0]  # NaN, then on from the last recorded total
