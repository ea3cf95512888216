"""Task families: sine-wave regression exactly as in the MAML paper, support and query sets,
seeded generators, and the fixed test set of 600 tasks.

Introduced in notebook 01_tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)
TEST_SEED = 20170309  # the MAML arXiv date; the 600 test tasks are drawn from it


@dataclass(frozen=True)
class Task:
    """A batch of tasks (every tensor has a leading task dimension), or one task (``single=True``).

    ``tasks[i]`` is one task of a batch, ``tasks[i:j]`` a smaller batch, ``for task in tasks`` loops
    over them, ``len(tasks)`` counts them. A single task has no length (``len`` would count its
    examples): functions that take a batch refuse it, ``task.as_batch()`` makes it a batch of one.
    ``info`` holds what generated each task (sine waves: amplitude and phase).
    """

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor
    info: Tensor | None = None
    single: bool = False

    def tensors(self) -> tuple:
        return (self.x_support, self.y_support, self.x_query, self.y_query, self.info)

    def _map(self, fn, single: bool) -> Task:
        return Task(*(None if t is None else fn(t) for t in self.tensors()), single=single)

    def __len__(self) -> int:
        if self.single:
            raise TypeError("a single task is not a batch of tasks: use task.as_batch() for a batch of one")
        return self.x_support.shape[0]

    def __getitem__(self, i) -> Task:
        if self.single:
            raise TypeError("a single task cannot be indexed by task: it is not a batch")
        return self._map(lambda t: t[i], single=not isinstance(i, slice))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def as_batch(self) -> Task:
        """This task as a batch of one (a batch is returned unchanged)."""
        return self._map(lambda t: t[None], single=False) if self.single else self

    def to(self, device=None, dtype=None) -> Task:
        def move(t):
            return t.to(device, dtype) if t.is_floating_point() else t.to(device)
        return self._map(move, self.single)


def as_batch(tasks, who: str):
    """``tasks`` if it is a batch of tasks (or a list of tasks); a single task is refused with one line."""
    if isinstance(tasks, Task) and tasks.single:
        raise ValueError(f"{who} takes a batch of tasks, got a single task: pass tasks[i:i+1] or task.as_batch()")
    return tasks


def _check_counts(shots: int, queries: int) -> None:
    if not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots (K) must be an integer >= 1, got {shots!r}: each task needs a support set")
    if not isinstance(queries, int) or queries < 1:
        raise ValueError(f"queries must be an integer >= 1, got {queries!r}: each task needs a query set")


def _uniform(shape, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def sine(x: Tensor, amplitude, phase) -> Tensor:
    """The task function ``y = A sin(x - phase)``."""
    return amplitude * torch.sin(x - phase)


def sine_tasks(amplitude, phase, shots: int, queries: int, generator: torch.Generator,
               dtype=torch.float32) -> Task:
    """Support and query points (x ~ U[-5, 5]) for given amplitudes and phases (tensors of shape (n,))."""
    _check_counts(shots, queries)
    amplitude = torch.as_tensor(amplitude, dtype=torch.float64).reshape(-1, 1, 1)
    phase = torch.as_tensor(phase, dtype=torch.float64).reshape(-1, 1, 1)
    n = amplitude.shape[0]
    x = _uniform((n, shots + queries, 1), *X_RANGE, generator)  # (tasks, K + Q, 1)
    y = sine(x, amplitude, phase)
    info = torch.cat([amplitude.reshape(-1, 1), phase.reshape(-1, 1)], 1)
    parts = (x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], info)
    return Task(*parts).to(dtype=dtype)


def sample_sine_tasks(n: int, shots: int = 10, queries: int = 10, generator: torch.Generator | None = None,
                      device="cpu", dtype=torch.float32) -> Task:
    """``n`` sine-wave tasks with ``A ~ U[0.1, 5]``, ``phase ~ U[0, pi]`` (MAML paper, §5.1).

    Tasks are drawn on the CPU from ``generator`` so the same seed gives the same tasks on any
    device, then moved to ``device``.
    """
    if n < 1:
        raise ValueError(f"the number of tasks must be >= 1, got {n}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    amplitude = _uniform((n,), *AMPLITUDE, generator)
    phase = _uniform((n,), *PHASE, generator)
    return sine_tasks(amplitude, phase, shots, queries, generator, dtype).to(device)


def sine_test_tasks(n: int = 600, shots: int = 5, queries: int = 100, seed: int = TEST_SEED,
                    device="cpu", dtype=torch.float32) -> Task:
    """The fixed test set: the same ``n`` tasks for a given seed, on every machine and device."""
    return sample_sine_tasks(n, shots, queries, torch.Generator().manual_seed(seed), device, dtype)


def sine_grid(n: int = 200, device="cpu") -> Tensor:
    """Evenly spaced inputs over the task range, shape (n, 1), for plotting curves."""
    return torch.linspace(*X_RANGE, n, device=device).reshape(-1, 1)
