"""The command line: smoke runs, the table and JSON, and one clear error per bad input."""

import json
import subprocess
import sys

import pytest
import torch

from mamlkit.__main__ import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mamlkit", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "maml.pt"
    assert main(["train", "--iterations", "20", "--meta-batch-size", "3", "--val-every", "10", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    return out


def test_train_and_evaluate_table(checkpoint, capsys):
    assert main(["evaluate", str(checkpoint), "--tasks", "30", "--steps", "1", "5"]) == 0
    out = capsys.readouterr().out
    assert "| maml |" in out and "1 step | 5 steps" in out and "±" in out


def test_evaluate_json(checkpoint, capsys):
    assert main(["evaluate", str(checkpoint), "--tasks", "30", "--steps", "1", "10", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["algo"] == "maml" and set(rows[0]["steps"]) == {"1", "10"}
    assert rows[0]["steps"]["1"]["ci95"] > 0


def test_non_transductive_flag(checkpoint, capsys):
    """Scoring each query on its own changes nothing for the sine MLP (no batch statistics)."""
    results = []
    for flag in ([], ["--non-transductive"]):
        assert main(["evaluate", str(checkpoint), "--tasks", "10", "--steps", "1", "--json", *flag]) == 0
        results.append(json.loads(capsys.readouterr().out)[0])
    assert [r["protocol"]["transductive"] for r in results] == [True, False]
    assert results[0]["steps"]["1"]["mean"] == pytest.approx(results[1]["steps"]["1"]["mean"], rel=1e-5)


def test_resume_flag_continues(checkpoint, tmp_path):
    out = tmp_path / "r.pt"
    out.write_bytes(checkpoint.read_bytes())
    assert main(["train", "--iterations", "30", "--meta-batch-size", "3", "--val-every", "10", "--out", str(out),
                 "--resume", "--no-progress"]) == 0
    assert torch.load(out, weights_only=True)["iteration"] == 30


@pytest.mark.parametrize("args,message", [
    (["train", "--algo", "maml++"], "invalid choice"),
    (["train", "--task", "mnist"], "invalid choice"),
    (["train", "--inner-lr", "0", "--iterations", "1"], "inner_lr must be a number > 0"),
    (["train", "--inner-steps", "0", "--iterations", "1"], "inner_steps must be an integer >= 1"),
    (["train", "--shots", "0", "--iterations", "1"], "shots must be an integer >= 1"),
    (["evaluate", "missing.pt"], "no checkpoint at missing.pt"),
    (["evaluate", "pyproject.toml"], "not a readable mamlkit checkpoint"),
    (["train", "--device", "cuda", "--iterations", "1"] if not torch.cuda.is_available()
     else ["train", "--device", "tpu"], "device"),
])
def test_bad_input_one_clear_message(args, message):
    result = run_cli(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_diverging_run_exits_nonzero_and_keeps_checkpoint(checkpoint, tmp_path):
    out = tmp_path / "d.pt"
    out.write_bytes(checkpoint.read_bytes())
    result = run_cli("train", "--inner-lr", "1000", "--inner-steps", "3", "--iterations", "200",
                     "--out", str(out), "--no-progress", "--overwrite")
    assert result.returncode != 0 and "diverged at iteration" in result.stderr and "--inner-lr" in result.stderr
    assert out.read_bytes() == checkpoint.read_bytes()


def test_init_and_outer_schedule_flags_are_stored(tmp_path):
    out = tmp_path / "c.pt"
    assert main(["train", "--iterations", "4", "--meta-batch-size", "2", "--val-every", "4", "--val-tasks", "2",
                 "--init", "torch", "--outer-schedule", "cosine", "--out", str(out), "--no-progress"]) == 0
    stored = torch.load(out, weights_only=True)["config"]
    assert (stored["init"], stored["outer_schedule"]) == ("torch", "cosine")


def test_evaluate_paired_is_the_per_task_difference_to_the_first(checkpoint, tmp_path, capsys):
    """--paired: each checkpoint minus the first on the same test tasks, equal to evaluation.paired_difference on
    per-task results computed here; in the table and in the JSON."""
    from mamlkit import evaluation, tasks, training
    from mamlkit import params as P

    other = tmp_path / "fomaml.pt"
    assert main(["train", "--algo", "fomaml", "--iterations", "20", "--meta-batch-size", "3", "--val-every", "10",
                 "--out", str(other), "--no-progress", "--device", "cpu"]) == 0
    capsys.readouterr()  # the training's own lines
    test = tasks.sine_test_tasks(30)
    scored = []
    for path in (checkpoint, other):
        run = training.load_run(path, "cpu")
        scored.append(evaluation.evaluate(run.model, P.get_params(run.model), test, torch.nn.functional.mse_loss,
                                          evaluation.Protocol.sgd(inner_lr=0.01, inner_steps=10)))
    want = {s: evaluation.paired_difference(scored[1], scored[0], s) for s in (1, 10)}
    assert main(["evaluate", str(checkpoint), str(other), "--tasks", "30", "--steps", "1", "10", "--paired",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert "paired_to_first" not in rows[0]
    for s, (mean, ci) in want.items():
        assert rows[1]["paired_to_first"][str(s)]["mean"] == pytest.approx(mean, abs=1e-6)
        assert rows[1]["paired_to_first"][str(s)]["ci95"] == pytest.approx(ci, abs=1e-6)
    assert abs(want[1][0]) > 1e-4  # two different models: the difference is not trivially zero
    assert main(["evaluate", str(checkpoint), str(other), "--tasks", "30", "--steps", "1", "10", "--paired"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(f"{other} − {checkpoint}, paired on the same tasks: 1 step: {want[1][0]:+.3f} ± ")


def test_evaluate_paired_needs_two_checkpoints_and_the_same_tasks(checkpoint, capsys):
    result = run_cli("evaluate", str(checkpoint), "--paired")
    assert result.returncode == 2 and "give two or more" in result.stderr and "Traceback" not in result.stderr
    assert main(["evaluate", str(checkpoint), str(checkpoint), "--tasks", "30", "--shots", "5", "--paired"]) == 0
    assert "+0.000 ± 0.000" in capsys.readouterr().out  # a checkpoint against itself
    from mamlkit import report
    rows = [{"task": "sinusoid", "metric": "mse", "ways": None, "tasks": 30, "protocol": {"shots": 5},
             "checkpoint": "a.pt"},
            {"task": "sinusoid", "metric": "mse", "ways": None, "tasks": 30, "protocol": {"shots": 10},
             "checkpoint": "b.pt"}]
    report.add_paired(rows)
    assert "not paired with a.pt" in rows[1]["paired_note"] and "paired" not in rows[1]
