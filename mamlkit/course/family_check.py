"""The checker of notebook 10's exercise: is a learner's task family something every algorithm can
meta-learn on? One line of feedback per typical mistake (wrong shapes, labels that are not remapped to
0…N−1 in every task, sampling that ignores the generator), as every checker of the course.

Introduced in notebook 10_your_own_task.
"""

from __future__ import annotations

import torch

from ..config import Config
from ..families import Family
from ..tasks import Task
from .feedback import Fail, call, checker, first_line

N, SHOTS, QUERIES = 6, 3, 4  # a small batch the checker asks for


def _sample(family: Family, seed: int, n: int = N) -> Task:
    return call(family.sample, n, "train", SHOTS, QUERIES, torch.Generator().manual_seed(seed))


def _expect_shapes(tasks: Task, n: int, per_task: int = 1) -> None:
    """``per_task``: points per shot (a classification task has ``ways`` × ``shots`` support points)."""
    if not isinstance(tasks, Task):
        raise Fail(f"sample must return a mamlkit.tasks.Task(x_support, y_support, x_query, y_query), "
                   f"got {type(tasks).__name__}")
    for part, count in (("support", SHOTS * per_task), ("query", QUERIES * per_task)):
        for kind in "xy":
            name = f"{kind}_{part}"
            value = getattr(tasks, name)
            if not isinstance(value, torch.Tensor):
                raise Fail(f"{name} should be a tensor, got {type(value).__name__}")
            if value.dim() < 2 or tuple(value.shape[:2]) != (n, count):
                raise Fail(f"{name} has shape {tuple(value.shape)}: it should start with (n, {part} size) = "
                           f"({n}, {count}) for n={n}, shots={SHOTS}, queries={QUERIES}"
                           + (f" per class, {per_task} classes" if per_task > 1 else "") + " (one row per task)")
    if tasks.x_support.shape[2:] != tasks.x_query.shape[2:] or tasks.y_support.shape[2:] != tasks.y_query.shape[2:]:
        raise Fail(f"support and query points differ in shape: x {tuple(tasks.x_support.shape[2:])} vs "
                   f"{tuple(tasks.x_query.shape[2:])}, y {tuple(tasks.y_support.shape[2:])} vs "
                   f"{tuple(tasks.y_query.shape[2:])}")
    if tasks.x_support.dtype != torch.float32:
        raise Fail(f"x is {tasks.x_support.dtype}: the models are float32, convert with .float()")


def _expect_labels(tasks: Task, ways: int) -> None:
    """Classification: integer labels 0…ways−1, every class in every task's support set."""
    for name in ("y_support", "y_query"):
        y = getattr(tasks, name)
        if y.dtype != torch.long or y.dim() != 2:
            raise Fail(f"{name} should hold class labels as a (n, points) tensor of dtype torch.long (what "
                       f"cross_entropy expects), got {y.dtype} with shape {tuple(y.shape)}")
        if y.min() < 0 or y.max() >= ways:
            raise Fail(f"{name} holds labels {int(y.min())}…{int(y.max())}: remap each task's classes to "
                       f"0…{ways - 1} (label i = the task's i-th class), not the classes' global ids")
    for i, y in enumerate(tasks.y_support):
        missing = sorted(set(range(ways)) - set(y.tolist()))
        if missing:
            raise Fail(f"task {i}'s support set has no example of class {missing[0]}: draw the support set per "
                       f"class (shots examples of each of the {ways} classes)")


def _expect_seeded(family: Family, first: Task) -> None:
    again = _sample(family, 0)
    if not all(torch.equal(a, b) for a, b in zip(first.tensors()[:4], again.tensors()[:4])):
        raise Fail("the same seed gave different tasks: draw every random number from `generator` "
                   "(torch.rand(..., generator=generator)), not from the global random state")
    other = _sample(family, 1)
    if torch.equal(other.x_support, first.x_support) and torch.equal(other.y_support, first.y_support):
        raise Fail("another seed gave the same tasks: pass generator=generator to every random draw")


def _expect_distinct_tasks(tasks: Task, classification: bool) -> None:
    support = tasks.y_support if classification else tasks.y_support.flatten(1)
    x = tasks.x_support.flatten(1)
    if torch.equal(x[0], x[1]) and torch.equal(support[0], support[1]):
        raise Fail("tasks 0 and 1 of a batch are identical: draw each task's parameters once per task, "
                   "with a leading dimension n (e.g. torch.rand(n, 1, 1, generator=generator))")
    if not classification and torch.allclose(tasks.y_query[0], tasks.y_query[1]) \
            and torch.equal(tasks.x_query[0], tasks.x_query[1]):
        raise Fail("tasks 0 and 1 give the same targets: each task needs its own function")


@checker
def check_family(family):
    """Notebook 10: ``family`` is a ``mamlkit.families.Family`` every algorithm can meta-learn on."""
    if not isinstance(family, Family):
        raise Fail(f"check a Family instance (class MyFamily(Family): ..., then MyFamily()), got {family!r}")
    classification = family.metric == "accuracy"
    ways = getattr(family, "ways", None)
    if classification and (not isinstance(ways, int) or ways < 2):
        raise Fail("a classification family (metric = 'accuracy') needs `ways`, its number of classes "
                   "per task (an int >= 2)")
    first = _sample(family, 0)
    _expect_shapes(first, N, ways if classification else 1)
    if classification:
        _expect_labels(first, ways)
    elif first.y_support.dtype != torch.float32:
        raise Fail(f"y is {first.y_support.dtype}: regression targets should be float32 (.float())")
    _expect_seeded(family, first)
    _expect_distinct_tasks(first, classification)
    try:
        model = family.model(Config(task=family.name, init="torch"))
        out = model(first.x_support[0])
    except Exception as e:  # a model that does not fit the data
        raise Fail(f"family.model(config) does not run on one task's x_support: {type(e).__name__}: "
                   f"{first_line(e)}") from None
    try:
        family.loss(out, first.y_support[0])
    except Exception as e:
        raise Fail(f"family.loss(model(x), y) failed on one task: {type(e).__name__}: {first_line(e)} "
                   f"(the model's output shape {tuple(out.shape)} must fit y {tuple(first.y_support[0].shape)})"
                   ) from None
    kind = f"{ways}-way classification" if classification else "regression"
    return f"{type(family).__name__}: {kind}, shapes, labels and seeding fit what every algorithm expects"
