"""Experiment (not part of the library): does Reptile's inner-Adam state matter on Omniglot?

The Reptile code (openai/supervised-reptile, ``Reptile.train_step``) resets only the model's trainable
variables between tasks: the inner Adam's moment estimates and step count carry over from task to task and
across meta-iterations, and evaluation fine-tunes from that state (``evaluate`` restores the full state
afterwards). mamlkit's first Omniglot Reptile started every task with a fresh Adam. This script trains
both ways with the per-task loop, the same seed, tasks and mini-batches (5-way 1-shot, 10 train shots,
5 Adam steps of 10, meta-batch 5, ε 1 → 0), and scores each on the same fixed test tasks
(50 Adam steps on the 5 support images).

The library now keeps that state (``mamlkit.adam.AdamState``, ``Config.keep_inner_state``, on by default for
Omniglot Reptile; ``tests/test_reptile.py`` checks it against the same plain-PyTorch loop as below). This
script stays as the experiment that motivated it, written without the library's inner loop.

    OMP_NUM_THREADS=1 python benchmarks/reptile_adam_state.py --iterations 2000 [--persistent] --tasks 200
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F

from mamlkit import reptile
from mamlkit.config import Config
from mamlkit.families import TrainingTasks, fixed_tasks
from mamlkit.tasks import step_batch
from mamlkit.training import new_run


def adam(model):
    return torch.optim.Adam(model.parameters(), lr=0.001, betas=(0.0, 0.999))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--persistent", action="store_true", help="keep the inner Adam state across tasks")
    parser.add_argument("--tasks", type=int, default=200, help="fixed test tasks to score")
    args = parser.parse_args()
    cfg = Config(task="omniglot", algo="reptile", iterations=args.iterations).resolved()
    run = new_run(cfg)
    model, source = run.model, TrainingTasks(cfg, "cpu")
    params = list(model.parameters())
    optimizer = adam(model)
    start = time.perf_counter()
    for it in range(cfg.iterations):
        tasks = reptile.minibatch_order(source.sample(cfg.meta_batch_size, run.generator), cfg.inner_batch,
                                        cfg.inner_steps, run.generator)
        old = [p.detach().clone() for p in params]
        mean = [torch.zeros_like(p) for p in params]
        for task in tasks:
            if not args.persistent:
                optimizer = adam(model)
            for step in range(cfg.inner_steps):
                x, y = step_batch(task.x_support, task.y_support, step, cfg.inner_batch)
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
            with torch.no_grad():
                for m, p, o in zip(mean, params, old):
                    m += p / len(tasks)
                    p.copy_(o)
        eps = cfg.outer_lr * (1 - it / cfg.iterations)
        with torch.no_grad():
            for p, o, m in zip(params, old, mean):
                p.copy_(o + eps * (m - o))
    minutes = (time.perf_counter() - start) / 60
    test = fixed_tasks(cfg, "test", args.tasks, 1, "cpu")
    correct = []
    weights, state = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    for task in test:
        tuner = adam(model)
        if args.persistent:
            tuner.load_state_dict(copy.deepcopy(state))
        for _ in range(50):
            tuner.zero_grad(set_to_none=True)
            F.cross_entropy(model(task.x_support), task.y_support).backward()
            tuner.step()
        with torch.no_grad():
            correct.append((model(task.x_query).argmax(-1) == task.y_query).float().mean())
        model.load_state_dict(weights)
    acc = torch.stack(correct) * 100
    print(json.dumps({"persistent_adam": args.persistent, "iterations": cfg.iterations, "train_minutes": minutes,
                      "tasks": args.tasks, "accuracy": float(acc.mean()),
                      "ci95": float(1.96 * acc.std() / len(acc) ** 0.5)}))


if __name__ == "__main__":
    main()
