"""Task families: the registry, and a family defined here, in a few lines, trained end to end with
every algorithm from Python and from the command line."""

import subprocess
import sys
import textwrap

import pytest
import torch

from mamlkit import families, runs, training
from mamlkit.config import Config
from mamlkit.families import Family, register
from mamlkit.tasks import Task

LINES = textwrap.dedent('''
    import torch
    from mamlkit.families import Family, register
    from mamlkit.tasks import Task


    class Lines(Family):
        """y = a x + b with a, b ~ U[-2, 2]: the smallest family worth meta-learning."""

        name = "lines"

        def sample(self, n, split, shots, queries, generator, device="cpu"):
            a, b = (4 * torch.rand(2, n, 1, 1, generator=generator) - 2).unbind(0)
            x = 10 * torch.rand(n, shots + queries, 1, generator=generator) - 5
            y = a * x + b
            return Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:]).to(device)


    register(Lines())
''')
FAST = dict(iterations=20, meta_batch_size=4, val_every=10, val_tasks=8, checkpoint_every=10)


@pytest.fixture(scope="module")
def lines():
    namespace = {}
    exec(compile(LINES, "lines_family.py", "exec"), namespace)  # the user's 15 lines
    yield families.get("lines")
    families.REGISTRY.pop("lines", None)


def test_the_built_in_families_are_registered():
    assert {"sinusoid", "omniglot"} <= set(families.REGISTRY)
    assert families.get("omniglot").metric == "accuracy" and families.get("omniglot").higher_is_better
    with pytest.raises(ValueError, match="unknown task 'mnist'; choose one of sinusoid, omniglot"):
        families.get("mnist")
    with pytest.raises(TypeError, match="Family instance"):
        register(object())


@pytest.mark.parametrize("algo", ["maml", "fomaml", "reptile", "pretrain"])
def test_a_user_family_trains_with_every_algorithm(lines, algo, tmp_path):
    out = tmp_path / f"{algo}.pt"
    run = training.meta_train(Config(task="lines", algo=algo, **FAST), out, progress=False)
    assert run.iteration == 20 and len(run.history["val_metric"]) == 2  # validated at 10 and 20
    result = training.evaluate_checkpoint(out, 20, "cpu", report=[0, 10])
    assert result["task"] == "lines" and result["metric"] == "mse" and result["scored"] == [0, 10]
    assert result["mean"][1] < result["mean"][0]  # fine-tuning on the support set helps
    fixed = lines.fixed_tasks("test", 3, 5)
    assert torch.equal(fixed.x_support, lines.fixed_tasks("test", 3, 5).x_support)  # the same test tasks


def test_meta_train_takes_a_family_object_and_any_module(tmp_path):
    class Steps(Family):
        name = "steps-test"

        def sample(self, n, split, shots, queries, generator, device="cpu"):
            level = torch.rand(n, 1, 1, generator=generator)
            x = torch.rand(n, shots + queries, 1, generator=generator)
            y = level.expand_as(x)
            return Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:]).to(device)

    model = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    try:
        run = training.meta_train(Config(task=Steps(), **FAST), tmp_path / "s.pt", model=model, progress=False)
        assert run.model is model and run.config.task == "steps-test"
        again = runs.load_run(tmp_path / "s.pt", model=torch.nn.Sequential(
            torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)))
        assert torch.equal(again.model[0].weight, model[0].weight)
    finally:
        families.REGISTRY.pop("steps-test", None)


def test_a_user_family_from_the_command_line(tmp_path):
    (tmp_path / "lines_family.py").write_text(LINES)
    out = tmp_path / "lines.pt"
    cli = [sys.executable, "-m", "mamlkit"]
    train = subprocess.run([*cli, "train", "--import", "lines_family", "--task", "lines", "--algo", "fomaml",
                            "--iterations", "20", "--meta-batch-size", "3", "--val-every", "10", "--val-tasks", "4",
                            "--out", str(out), "--no-progress", "--device", "cpu"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert train.returncode == 0, train.stderr
    evaluate = subprocess.run([*cli, "evaluate", str(out), "--import", "lines_family", "--tasks", "10"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr
    assert "(lines, fomaml)" in evaluate.stdout
    missing = subprocess.run([*cli, "train", "--import", "no_such_module", "--task", "lines"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1 and "no_such_module" in missing.stderr
