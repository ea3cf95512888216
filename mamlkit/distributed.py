"""Data parallelism over the meta-batch with ``torch.distributed``: each process adapts its share
of the tasks, meta-gradients (or Reptile's mean φ) are summed across processes, so every process
takes the same outer step as a single process would on the whole meta-batch.

Started the standard way: ``torchrun --nproc-per-node N -m mamlkit train ...``
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

from .tasks import Task

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not running distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def init_from_env(device: str = "auto") -> str:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU); returns the device.

    Only for training (the command line calls it for ``train`` alone): a stray ``WORLD_SIZE`` must not
    make anything else wait for peers or open a TCP store. Without the other variables torchrun sets
    (``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) it is a clear error, not a hang.
    """
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number: unset it, or start "
                         "with torchrun") from None
    if world_size <= 1 or dist.is_initialized():
        return device
    missing = [k for k in TORCHRUN_VARIABLES if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world_size} is set but {', '.join(missing)} not: start distributed training "
                         "with `torchrun --nproc-per-node N -m mamlkit train ...`, or unset WORLD_SIZE")
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def shard(tasks: Task) -> tuple[Task, float]:
    """This process's tasks and the weight (its share of the meta-batch) of their mean loss."""
    rank, size = world()
    if size == 1:
        return tasks, 1.0
    if len(tasks) < size:
        raise ValueError(f"meta_batch_size {len(tasks)} is smaller than the {size} processes; raise it")
    mine = tasks[rank::size]
    return mine, len(mine) / len(tasks)


def all_reduce_(tensors) -> None:
    """Sum tensors in place across processes (no-op when not distributed)."""
    if world()[1] == 1:
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def reduce_mean(value: Tensor, weight: float) -> Tensor:
    """The weighted sum across processes of a per-process mean (the meta-batch mean)."""
    value = value * weight
    all_reduce_([value])
    return value


def any_true(flag: bool) -> bool:
    """True on every process if it is true on any (so all stop at the same iteration)."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([float(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def combine_reptile(mean_phi: dict, state, weight: float, step: int):
    """Reptile across processes: the weighted sum of each process's mean φ and, for a kept inner Adam
    state (each process ran its share of the tasks in sequence), the average of the processes' moments
    with the step count ``step`` a single process would have reached. Unchanged on one process."""
    if weight == 1.0:
        return mean_phi, state
    mean_phi = {k: v * weight for k, v in mean_phi.items()}
    all_reduce_(mean_phi.values())
    if state is not None:
        moments = state.tensors()
        for t in moments:
            t.mul_(weight)
        all_reduce_(moments)
        state.step = step
    return mean_phi, state
