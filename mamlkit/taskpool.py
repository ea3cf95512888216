"""The tasks of a meta-batch on several CPU cores at once (the per-task loop, issue 16).

A task's adaptation on Omniglot is a handful of small convolutions: split across two cores by PyTorch's
intra-op threads, each of them waits on the other core for little work. ``map_tasks`` instead gives each
worker thread whole tasks, with one intra-op thread each (PyTorch's kernels and its autograd engine release
the GIL, and backward runs on the calling thread for CPU tensors). The results come back in task order, so a
sum over them is the same sum as the sequential loop's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def check_workers(workers) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 (tasks adapted in parallel on the CPU), got {workers!r}")
    return workers


def replicas(model: torch.nn.Module, n: int) -> list[torch.nn.Module]:
    """``model`` and ``n - 1`` copies of it that share its parameters and buffers (the same tensors): each thread
    calls its own, because ``functional_call`` swaps a module's tensors while it runs."""
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return [model] + [copy.deepcopy(model, memo=dict(shared)) for _ in range(n - 1)]


def map_tasks(fn: Callable[[T, int], R], items: Sequence[T], workers: int = 1) -> list[R]:
    """``[fn(x, worker) for x in items]`` in item order; with ``workers > 1``, worker ``j`` (a thread of one
    intra-op thread) takes items ``j, j + workers, …``. The caller's thread count is restored after."""
    check_workers(workers)
    workers = min(workers, len(items))
    if workers <= 1:
        return [fn(x, 0) for x in items]

    def share(j: int) -> list[R]:
        return [fn(x, j) for x in items[j::workers]]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # read by each new thread at its first parallel region
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="mamlkit-task") as pool:
            shares = list(pool.map(share, range(workers)))
    finally:
        torch.set_num_threads(threads)
    return [shares[i % workers][i // workers] for i in range(len(items))]
