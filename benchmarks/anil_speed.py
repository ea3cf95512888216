"""ANIL's speed-up per meta-iteration against MAML: one process, one thread, the two alternated on the same
task batches (so a busy machine slows both alike), the per-task loop path, the median of the iterations.

    OMP_NUM_THREADS=1 python benchmarks/anil_speed.py [--iterations 15] [--task omniglot sinusoid]

Omniglot: 5-way 1-shot, Conv4, meta-batch 8, 15 queries per class, 1 inner step (the MAML paper's training
protocol otherwise). Sine: MLP 1-40-40-1, meta-batch 25, K = 10, 1 inner step. Both algorithms run the
library's own outer step (``training.outer_step``), optimizer step included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mamlkit import training
from mamlkit.config import Config
from mamlkit.runs import new_run

SETTINGS = {"omniglot": dict(task="omniglot", meta_batch_size=8), "sinusoid": dict(task="sinusoid")}


def measure(task: str, iterations: int, warmup: int = 2) -> dict:
    runs = {algo: new_run(Config(algo=algo, batched=False, **SETTINGS[task])) for algo in ("maml", "anil")}
    cfg = runs["maml"].config
    family, generator = runs["maml"].family, torch.Generator().manual_seed(0)
    times = {algo: [] for algo in runs}
    for i in range(warmup + iterations):
        tasks = family.sample(cfg.meta_batch_size, "train", cfg.shots, cfg.queries, generator)
        order = list(runs) if i % 2 == 0 else list(reversed(runs))  # alternate who goes first
        for algo in order:
            start = time.perf_counter()
            training.outer_step(runs[algo], tasks, batched=False)
            if i >= warmup:
                times[algo].append(time.perf_counter() - start)
    med = {algo: statistics.median(t) for algo, t in times.items()}
    ratios = [m / a for m, a in zip(times["maml"], times["anil"])]  # per iteration, same tasks
    return {"task": task, "meta_batch_size": cfg.meta_batch_size, "inner_steps": cfg.inner_steps,
            "iterations": iterations, "threads": torch.get_num_threads(),
            "median_s": med, "speedup_of_medians": med["maml"] / med["anil"],
            "median_paired_speedup": statistics.median(ratios),
            "paired_speedup_range": [min(ratios), max(ratios)]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--task", nargs="+", default=["omniglot", "sinusoid"], choices=list(SETTINGS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for task in args.task:
        print(json.dumps(measure(task, args.iterations)), flush=True)


if __name__ == "__main__":
    main()
