"""Notebook 10's checker: a correct family passes, each typical mistake gets its own hint."""

import math

import pytest
import solutions  # instructor/solutions.py
import torch
import torch.nn.functional as F

from mamlkit import config, evaluation, families, models, params, training
from mamlkit.course.family_check import check_family
from mamlkit.tasks import Task


class Clusters(families.Family):
    name = "clusters-test"
    metric, higher_is_better, loss = "accuracy", True, staticmethod(F.cross_entropy)

    def __init__(self, ways=3):
        self.ways = ways

    def model(self, config):
        return models.MLP((2, 40, 40, self.ways), init="torch")

    sample = solutions.clusters_sample


class Waves(families.Family):
    name = "waves-test"

    def sample(self, n, split, shots, queries, generator, device="cpu"):
        phase = 2 * math.pi * torch.rand(n, 1, 1, generator=generator)
        x = 5 * torch.rand(n, shots + queries, 1, generator=generator)
        y = torch.sin(x + phase)
        return Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


def mistake(base, sample):
    """A copy of the family ``base`` whose ``sample`` is ``sample(original, self, *args)``."""
    original = type(base).sample
    cls = type("Mistake", (type(base),), {"sample": lambda self, *a, **k: sample(original, self, *a, **k)})
    return cls()


def run(family, capsys):
    ok = check_family(family)
    return ok, capsys.readouterr().out.strip()


def test_correct_families_pass(capsys):
    for family in (Clusters(), Clusters(5), Waves()):
        ok, out = run(family, capsys)
        assert ok, out
        assert out.startswith("✔") and out.count("\n") == 0


def test_solution_tasks_are_rotated_clusters_with_per_task_labels():
    tasks = Clusters(4).sample(50, "train", 2, 3, torch.Generator().manual_seed(0))
    assert tasks.x_support.shape == (50, 8, 2) and tasks.y_query.shape == (50, 12)
    assert torch.equal(tasks.y_support[0], torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    # points of a class sit near each other (spread 0.3), classes apart on average
    x = tasks.x_query.reshape(50, 4, 3, 2)
    within = (x - x.mean(2, keepdim=True)).norm(dim=-1).mean()
    between = (x.mean(2)[:, :, None] - x.mean(2)[:, None]).norm(dim=-1).sum() / (50 * 4 * 3)
    assert within < 0.5 < between


@pytest.mark.parametrize("fix,hint", [
    (lambda orig, self, n, *a, **k: orig(self, n, *a, **k)[: n - 1], "should start with (n, support size)"),
    (lambda orig, self, *a, **k: Task(*(t.transpose(0, 1) if t.dim() > 2 else t
                                        for t in orig(self, *a, **k).tensors()[:4])), "should start with"),
    (lambda orig, self, *a, **k: _relabel(orig(self, *a, **k), lambda y: y + 7), "remap each task's classes"),
    (lambda orig, self, *a, **k: _relabel(orig(self, *a, **k), lambda y: y.float()), "dtype torch.long"),
    (lambda orig, self, *a, **k: _relabel(orig(self, *a, **k), lambda y: y.clamp(max=self.ways - 2)),
     "no example of class"),
    (lambda orig, self, n, split, s, q, g, *r: orig(self, n, split, s, q, _unseeded()),
     "same seed gave different tasks"),
    (lambda orig, self, n, split, s, q, g, *r: orig(self, n, split, s, q, torch.Generator().manual_seed(3)),
     "another seed gave the same tasks"),
    (lambda orig, self, n, *a, **k: _repeat(orig(self, 1, *a, **k), n), "identical"),
    (lambda orig, self, *a, **k: [1, 2, 3], "must return a mamlkit.tasks.Task"),
    (lambda orig, self, *a, **k: 1 / 0, "your function raised ZeroDivisionError"),
])
def test_each_typical_classification_mistake_gets_its_hint(fix, hint, capsys):
    ok, out = run(mistake(Clusters(), fix), capsys)
    assert not ok and out.startswith("✘") and hint in out, out
    assert out.count("\n") == 0


@pytest.mark.parametrize("fix,hint", [
    (lambda orig, self, *a, **k: Task(*(t.double() for t in orig(self, *a, **k).tensors()[:4])),
     "convert with .float()"),
    (lambda orig, self, n, *a, **k: _repeat(orig(self, 1, *a, **k), n), "identical"),
    (lambda orig, self, *a, **k: Task(*(t[..., 0] for t in orig(self, *a, **k).tensors()[:4])),
     "does not run on one task"),
])
def test_each_typical_regression_mistake_gets_its_hint(fix, hint, capsys):
    ok, out = run(mistake(Waves(), fix), capsys)
    assert not ok and hint in out, out


def test_not_a_family_and_missing_ways(capsys):
    ok, out = run(Clusters, capsys)  # the class, not an instance
    assert not ok and "Family instance" in out
    family = Clusters()
    family.ways = None
    ok, out = run(family, capsys)
    assert not ok and "needs `ways`" in out


def _unseeded():
    return torch.Generator().manual_seed(torch.seed() % 2**31)  # what a sampler using the global state draws


def _relabel(tasks, fn):
    return Task(tasks.x_support, fn(tasks.y_support), tasks.x_query, fn(tasks.y_query))


def _repeat(tasks, n):
    return Task(*(t.expand(n, *t.shape[1:]) for t in tasks.tensors()[:4]))


def test_a_checked_family_meta_trains_and_evaluates():
    """What the checker promises: meta_train and evaluate run on the family (short MAML run, accuracy above chance)."""
    family = families.register(Clusters())
    try:
        cfg = config.Config(task=family.name, algo="maml", iterations=60, shots=1, queries=5, meta_batch_size=8,
                            inner_lr=0.5, outer_lr=0.01, init="torch", val_every=60, val_tasks=10, checkpoint_every=60)
        run = training.meta_train(cfg, progress=False)
        test = family.fixed_tasks("test", 100, shots=1)
        result = evaluation.evaluate(run.model, params.get_params(run.model), test, family.loss,
                                     evaluation.Protocol.sgd(inner_lr=0.5, inner_steps=3), metric="accuracy")
        assert result.at(3)[0] > 1 / 3 + 0.1
    finally:
        families.REGISTRY.pop(family.name)
