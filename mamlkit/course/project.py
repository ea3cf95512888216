"""The project of the graded homework (assignment 5): MAML on a new task family, quadratic functions
``y = a x² + b x + c``. The learner writes the task sampler and tunes MAML's hyperparameters within a
compute budget; this module checks the sampler, meta-trains, and checks the result against the target.

Introduced in homework/source/hw5_project_quadratics (see homework/README.md).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import params as P
from .. import training
from ..config import Config
from ..evaluation import Protocol, evaluate
from ..models import MLP
from ..tasks import Task
from .families import Quadratics
from .feedback import Fail, call, checker, close, first_line

COEFFICIENTS, X_RANGE = Quadratics.COEFFICIENTS, Quadratics.X_RANGE  # y = a x² + b x + c, a, b, c ~ U[-1, 1]
SHOTS, QUERIES = 5, 10
BUDGET = 8000  # meta_steps × meta_batch_size × inner_steps: a few seconds on a laptop CPU
MAX_INNER_STEPS = 10
TARGET_MSE = 0.5  # query MSE after adaptation; without meta-training the best α and k reach about 0.5,
BASELINE_RATIO = 0.75  # so it must also be below 3/4 of what the same adaptation reaches from a random init
HYPERPARAMETERS = ("inner_lr", "inner_steps", "outer_lr", "meta_steps", "meta_batch_size")


def reference_quadratics(n: int, generator: torch.Generator, shots: int = SHOTS, queries: int = QUERIES) -> Task:
    """Quadratic tasks drawn the way assignment 5 asks, for validation; ``info`` holds (a, b, c)."""
    return Quadratics().sample(n, "test", shots, queries, generator)


@checker
def check_quadratic_tasks(fn):
    """hw5: a seeded sampler of quadratic-function regression tasks."""
    n, shots, queries = 400, 4, 6
    result = call(fn, n, shots, queries, torch.Generator().manual_seed(0))
    if not isinstance(result, Task):
        raise Fail(f"return a mamlkit.tasks.Task(x_support, y_support, x_query, y_query, info), got "
                   f"{type(result).__name__}")
    shapes = {"x_support": (n, shots, 1), "y_support": (n, shots, 1), "x_query": (n, queries, 1),
              "y_query": (n, queries, 1), "info": (n, 3)}
    for name, shape in shapes.items():
        value = getattr(result, name)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise Fail(f"{name} should have shape {shape} for n={n}, shots={shots}, queries={queries}, got {got}")
        if value.dtype != torch.float32:
            raise Fail(f"{name} is {value.dtype}: the model is float32, convert with .float()")
    a, b, c = (result.info[:, i].reshape(-1, 1, 1) for i in range(3))
    for part in ("support", "query"):
        x, y = getattr(result, f"x_{part}"), getattr(result, f"y_{part}")
        if x.min() < X_RANGE[0] or x.max() > X_RANGE[1] or x.max() - x.min() < 3:
            raise Fail(f"x_{part} should be uniform on [-2, 2], got values in [{x.min():.2f}, {x.max():.2f}]")
        if not close(y, a * x**2 + b * x + c, rtol=1e-4, atol=1e-4):
            raise Fail(f"y_{part} differs from a x² + b x + c with (a, b, c) = info[i]")
    if result.info.min() < -1 or result.info.max() > 1 or result.info.std(0).min() < 0.4:
        raise Fail("draw each coefficient a, b, c uniformly from [-1, 1], independently for every task")
    again = call(fn, n, shots, queries, torch.Generator().manual_seed(0))
    if not isinstance(again, Task) or not torch.equal(again.x_support, result.x_support):
        raise Fail("the same seed must give the same tasks: draw everything from `generator`")
    other = call(fn, n, shots, queries, torch.Generator().manual_seed(1))
    if torch.equal(other.info, result.info):
        raise Fail("another seed gave the same tasks: pass generator=generator to torch.rand")
    return "quadratic_tasks draws y = a x² + b x + c, (a, b, c) ~ U[-1, 1]³, x ~ U[-2, 2]"


@dataclass
class ProjectResult:
    """A meta-trained model of the project, with the hyperparameters and the training time."""

    model: nn.Module
    params: P.Params
    hyper: dict
    seconds: float


@contextmanager
def one_thread():
    """Run torch on one CPU thread: a 40-unit MLP on a few points is too small to share out, and on a
    busy machine extra threads make it up to ten times slower (measured on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def project_config(sample_tasks, inner_lr: float, inner_steps: int, outer_lr: float, meta_steps: int,
                   meta_batch_size: int, first_order: bool = False, seed: int = 0) -> Config:
    """The learner's settings as a ``mamlkit.training.meta_train`` configuration on the tasks
    ``sample_tasks(n, shots, queries, generator)`` draws (a ``Quadratics`` family around the sampler):
    the paper's MLP with PyTorch's initialisation, Adam outer steps of ``outer_lr``, batched."""
    return Config(task=Quadratics(sample_tasks), algo="fomaml" if first_order else "maml", iterations=meta_steps,
                  inner_lr=inner_lr, inner_steps=inner_steps, outer_lr=outer_lr, meta_batch_size=meta_batch_size,
                  shots=SHOTS, queries=QUERIES, seed=seed, init="torch", batched=True, val_every=meta_steps,
                  val_tasks=2, checkpoint_every=meta_steps)


def validate_hyperparameters(hyper) -> dict:
    """The learner's settings, unchanged, once they are complete, well typed and within the budget."""
    if not isinstance(hyper, dict) or set(HYPERPARAMETERS) - set(hyper):
        raise Fail(f"hyperparameters() should return a dict with the keys {', '.join(HYPERPARAMETERS)}")
    if set(hyper) - set(HYPERPARAMETERS) - {"first_order"}:
        raise Fail(f"unknown keys {sorted(set(hyper) - set(HYPERPARAMETERS) - {'first_order'})}")
    for key in ("inner_steps", "meta_steps", "meta_batch_size"):
        if isinstance(hyper[key], bool) or not isinstance(hyper[key], int) or hyper[key] < 1:
            raise Fail(f"{key} should be an integer >= 1, got {hyper[key]!r}")
    for key in ("inner_lr", "outer_lr"):
        if isinstance(hyper[key], bool) or not isinstance(hyper[key], (int, float)) or not 0 < hyper[key] <= 1:
            raise Fail(f"{key} should be a number in (0, 1], got {hyper[key]!r}")
    if hyper["inner_steps"] > MAX_INNER_STEPS:
        raise Fail(f"at most {MAX_INNER_STEPS} inner steps, got {hyper['inner_steps']}")
    cost = hyper["meta_steps"] * hyper["meta_batch_size"] * hyper["inner_steps"]
    if cost > BUDGET:
        raise Fail(f"meta_steps × meta_batch_size × inner_steps = {cost} is over the budget of {BUDGET}")
    return hyper


def run(sample_tasks, hyperparameters) -> ProjectResult | None:
    """Meta-train with the learner's task sampler and hyperparameters; print one line; None on failure."""
    try:
        hyper = validate_hyperparameters(call(hyperparameters))
        start = time.perf_counter()
        with one_thread():
            run = training.meta_train(project_config(lambda *a: call(sample_tasks, *a), **hyper), progress=False)
        model, theta = run.model, P.detach(P.get_params(run.model))
    except Fail as e:
        print(f"✘ {e}")
        return None
    except Exception as e:  # e.g. a sampler that returns the wrong shapes
        print(f"✘ meta-training failed: {type(e).__name__}: {first_line(e)}")
        return None
    seconds = time.perf_counter() - start
    print(f"meta-trained for {hyper['meta_steps']} outer steps in {seconds:.1f} s")
    return ProjectResult(model, theta, dict(hyper), seconds)


def adapted_mse(model: nn.Module, params: P.Params, tasks: Task, inner_lr: float, inner_steps: int) -> float:
    """Mean query MSE over ``tasks`` after ``inner_steps`` SGD steps of ``inner_lr`` on each support set."""
    with one_thread():
        return evaluate(model, params, tasks, F.mse_loss, Protocol.sgd(inner_lr, inner_steps)).at(inner_steps)[0]


@checker
def check_meta_trained(result):
    """hw5: the meta-trained model adapts to new quadratics below the target MSE."""
    if not isinstance(result, ProjectResult):
        raise Fail("no meta-trained model yet: fix the ✘ above (hyperparameters() or quadratic_tasks)")
    lr, steps = result.hyper["inner_lr"], result.hyper["inner_steps"]
    tasks = reference_quadratics(100, torch.Generator().manual_seed(2024))
    mse = adapted_mse(result.model, result.params, tasks, lr, steps)
    torch.manual_seed(0)  # the initialisation meta_train starts from
    untrained = adapted_mse(result.model, P.get_params(MLP((1, 40, 40, 1), init="torch")), tasks, lr, steps)
    line = (f"MSE after {steps} inner step(s) on 100 validation quadratics: {mse:.3f} "
            f"(without meta-training {untrained:.3f})")
    if not mse < TARGET_MSE:
        raise Fail(f"{line}, target < {TARGET_MSE}: tune α, the inner steps, β and the meta-steps within the budget")
    if not mse < BASELINE_RATIO * untrained:
        raise Fail(f"{line}: meta-training should lower it below {BASELINE_RATIO} × {untrained:.3f}; "
                   "a larger α or more inner steps alone is not MAML")
    return f"{line}: below {TARGET_MSE} and {BASELINE_RATIO} × {untrained:.3f}"
