"""Peak memory of one meta-iteration: the per-task loop, the batched path, and the batched path in
chunks (``max_memory``), at the same meta-batch, each variant in its own process (peak RSS growth on
the CPU; ``torch.cuda.max_memory_allocated`` on CUDA).

    OMP_NUM_THREADS=1 python benchmarks/memory.py --workload W2 --max-memory 100 25 --iters 1
    python benchmarks/memory.py --workload W2 --device cuda --max-memory 100 25

W1: sine MLP 1-40-40-1, meta-batch 25, K = 10 + 10, 1 inner step. W2: Conv4 on 1×28×28 random
pixels, 5-way 1-shot, 15 queries, meta-batch 32, 1 inner step. Second-order MAML.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from mamlkit import maml
from mamlkit import params as P
from mamlkit.inner import InnerLoop

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from speed import rss_mb, workload  # noqa: E402


def measure(work: str, variant: str, budget: float | None, device, iters: int) -> dict:
    torch.manual_seed(0)
    model, tasks, loss_fn, inner_lr = workload(work, device)
    params, batch = P.get_params(model), tasks()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    inner = InnerLoop.sgd(inner_lr, 1)
    base = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    start = time.perf_counter()
    for _ in range(iters):
        opt.zero_grad(set_to_none=True)
        how = maml.Execution(batched=variant != "loop", max_memory=budget if variant == "chunked" else None)
        maml.meta_backward(model, params, batch, loss_fn, inner, how)
        opt.step()
    seconds = (time.perf_counter() - start) / iters
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024) - base
    return {"workload": work, "variant": variant, "max_memory": budget if variant == "chunked" else None,
            "peak_mb": peak, "it_per_s": 1 / seconds, "device": str(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="W2", choices=["W1", "W2"])
    parser.add_argument("--max-memory", type=float, nargs="+", default=[100.0, 25.0],
                        help="MB, one chunked variant each")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.one:
        print(json.dumps(measure(args.workload, args.one, args.max_memory[0], device, args.iters)))
        return
    rows = []
    for variant, budget in [("loop", 1.0), ("batched", 1.0)] + [("chunked", b) for b in args.max_memory]:
        cmd = [sys.executable, __file__, "--one", variant, "--workload", args.workload, "--max-memory",
               str(budget), "--device", args.device, "--iters", str(args.iters)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    loop = rows[0]["peak_mb"]
    print("| workload | variant | max_memory MB | peak MB | × loop | it/s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['variant']} | {r['max_memory'] or '—'} | {r['peak_mb']:.1f} | "
              f"{r['peak_mb'] / loop:.2f}× | {r['it_per_s']:.2f} |")


if __name__ == "__main__":
    main()
