"""Omniglot 5-way 1-shot training step on the CPU: mamlkit's MAML and FOMAML step (the path training
takes there: episode sampling from the real data + ``maml.meta_backward`` + outer Adam) against a plain
per-task reference (``nn.BatchNorm2d`` Conv4, ``functional_call`` + ``autograd.grad``), in one process,
alternating, median of ``--repeats`` rounds.

    OMP_NUM_THREADS=2 python benchmarks/omniglot_step.py --threads 1 2 --meta-batch 8 32 --repeats 5
    python benchmarks/omniglot_step.py --profile        # where mamlkit's step spends its time

The reference draws no episodes (it reuses pre-sampled batches); mamlkit's step includes its sampler,
so the ratio is conservative. 15 queries per class, one inner SGD step of 0.4 (the paper's training).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mamlkit import families, maml
from mamlkit import params as P
from mamlkit.inner import InnerLoop
from mamlkit.models import BatchNorm, Conv4

INNER_LR = 0.4


def reference_model(ways: int = 5) -> nn.Module:
    """Conv4 as one writes it without mamlkit: ``nn.BatchNorm2d`` on batch statistics."""
    layers = []
    for i in range(4):
        layers += [nn.Conv2d(1 if i == 0 else 64, 64, 3, stride=2, padding=1),
                   nn.BatchNorm2d(64, track_running_stats=False), nn.ReLU()]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(256, ways))


def reference_step(model, opt, tasks, first_order: bool) -> None:
    """The dozen lines: per task one inner step through ``functional_call``, query loss, backward."""
    params = dict(model.named_parameters())
    opt.zero_grad()
    for xs, ys, xq, yq in zip(tasks.x_support, tasks.y_support, tasks.x_query, tasks.y_query):
        loss = F.cross_entropy(functional_call(model, params, (xs,)), ys)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        adapted = {k: v - INNER_LR * g for (k, v), g in zip(params.items(), grads)}
        (F.cross_entropy(functional_call(model, adapted, (xq,)), yq) / len(tasks.x_support)).backward()
    opt.step()


def mamlkit_step(model, opt, family, n, generator, first_order: bool, workers: int = 1) -> None:
    """What ``training.outer_step`` does for MAML / FOMAML on the CPU (the per-task loop), with sampling;
    ``workers`` tasks at once on as many threads (``--workers``)."""
    tasks = family.sample(n, "train", 1, 15, generator)
    params = P.get_params(model)
    opt.zero_grad(set_to_none=True)
    maml.meta_backward(model, params, tasks, family.loss, InnerLoop.sgd(INNER_LR, 1, first_order),
                       maml.Execution(workers=workers))
    opt.step()


class PlainBatchNorm(BatchNorm):
    """mamlkit's BatchNorm as it was before the fused kernel: plain ops in the loop too (the "before")."""

    forward = BatchNorm.plain


def plain_conv4() -> nn.Module:
    model = Conv4(5)
    for i, m in enumerate(model):
        if isinstance(m, BatchNorm):
            model[i] = PlainBatchNorm(m.weight.shape[0])
    return model


def contenders(n: int, batches, family, generator, first_order: bool, before: bool, threads: int) -> dict:
    """name -> function doing one training step (argument: the round). With ``threads > 1``, also
    ``mamlkit-workers``: ``threads`` tasks at once, one thread each (``--workers``), on the same cores."""
    torch.manual_seed(0)
    models = {"reference": reference_model(), "mamlkit": Conv4(5)}
    workers = {"mamlkit": 1}
    if threads > 1:
        models["mamlkit-workers"], workers["mamlkit-workers"] = Conv4(5), threads
    if before:
        models["mamlkit-before"], workers["mamlkit-before"] = plain_conv4(), 1
    opts = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, m in models.items()}
    steps = {"reference": lambda i: reference_step(models["reference"], opts["reference"], batches[i % 2], first_order)}
    for name in list(models)[1:]:
        steps[name] = (lambda m, o, w: lambda i: mamlkit_step(m, o, family, n, generator, first_order, w))(
            models[name], opts[name], workers[name])
    return steps


def measure(meta_batches, threads, repeats, iters, before=False) -> list[dict]:
    family = families.get("omniglot")
    generator = torch.Generator().manual_seed(0)
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        for n in meta_batches:
            batches = [family.sample(n, "train", 1, 15, generator) for _ in range(2)]
            for first_order in (False, True):
                steps = contenders(n, batches, family, generator, first_order, before, t)
                for step in steps.values():  # warm-up
                    step(0)
                times = {k: [] for k in steps}
                for _ in range(repeats):  # alternating rounds: the shared machine's drift hits all alike
                    for name, step in steps.items():
                        start = time.perf_counter()
                        for i in range(iters):
                            step(i)
                        times[name].append((time.perf_counter() - start) / iters)
                for name in list(steps)[1:]:
                    ratios = [r / m for r, m in zip(times["reference"], times[name])]
                    row = {"algo": "fomaml" if first_order else "maml", "meta_batch": n, "threads": t, "impl": name,
                           "reference_it_s": 1 / statistics.median(times["reference"]),
                           "it_s": 1 / statistics.median(times[name]), "ratio_median": statistics.median(ratios),
                           "ratio_min": min(ratios), "ratio_max": max(ratios)}
                    rows.append(row)
                    print(f"{row['algo']:6} mb={n:2} threads={t} reference {row['reference_it_s']:6.2f} it/s  "
                          f"{name:15} {row['it_s']:6.2f} it/s  ×{row['ratio_median']:.2f} "
                          f"({row['ratio_min']:.2f}–{row['ratio_max']:.2f})", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| algo | meta-batch | threads | impl | reference it/s | it/s | × reference (median, min–max) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['algo']} | {r['meta_batch']} | {r['threads']} | {r['impl']} | {r['reference_it_s']:.2f} | "
              f"{r['it_s']:.2f} | {r['ratio_median']:.2f}× ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) |"
              for r in rows]
    return "\n".join(lines)


def profile(n: int, first_order: bool, iters: int) -> None:
    """torch.profiler table of mamlkit's step (self CPU time by operator)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    family, generator = families.get("omniglot"), torch.Generator().manual_seed(0)
    model = Conv4(5)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    mamlkit_step(model, opt, family, n, generator, first_order)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            mamlkit_step(model, opt, family, n, generator, first_order)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meta-batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=1, help="steps per timed round")
    parser.add_argument("--before", action="store_true", help="also time mamlkit with plain-op BatchNorm in the loop "
                        "(the implementation before the fused kernel)")
    parser.add_argument("--profile", action="store_true", help="profile mamlkit's MAML step instead")
    args = parser.parse_args()
    if args.profile:
        torch.set_num_threads(args.threads[0])
        profile(args.meta_batch[0], False, args.iters)
        return
    rows = measure(args.meta_batch, args.threads, args.repeats, args.iters, args.before)
    print(f"\ntorch {torch.__version__}\n\n" + table(rows))


if __name__ == "__main__":
    main()
