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
