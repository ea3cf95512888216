"""Meta-iterations per second and peak memory: mamlkit's per-task loop and batched (vmap) path
against the installed peers (higher, TorchOpt), in one run, each configuration in its own process.

    python benchmarks/speed.py --device cpu --out benchmarks/results-cpu.json

``mamlkit-compiled`` is ``--compile`` (W1; its first step, the compilation, is reported apart as ``first_step_s``).
W1 sine: MLP 1-40-40-1, meta-batch 25, K = 10 support + 10 query, 1 and 5 inner steps.
W2 Omniglot-shaped: Conv4 on 1×28×28 (random pixels), 5-way 1-shot, 15 queries per class,
meta-batch 32, 1 and 5 inner steps. Ratios are to the fastest peer measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from mamlkit import maml, reptile
from mamlkit import params as P
from mamlkit.inner import InnerLoop
from mamlkit.models import MLP, Conv4
from mamlkit.tasks import Task, sample_sine_tasks

WORKLOADS = {
    "W1": dict(algos=("maml", "fomaml", "reptile"), steps=(1, 5)),
    "W2": dict(algos=("maml", "fomaml"), steps=(1, 5)),
}
IMPLS = ("mamlkit-loop", "mamlkit-batched", "mamlkit-compiled", "higher", "torchopt")


def workload(name: str, device):
    g = torch.Generator().manual_seed(0)
    if name == "W1":
        model = MLP(init="torch").to(device)
        return model, (lambda: sample_sine_tasks(25, 10, 10, g, device)), F.mse_loss, 0.01
    model = Conv4(5).to(device)

    def tasks():
        x = torch.rand(32, 5 * 16, 1, 28, 28, generator=g).to(device)
        y = torch.arange(5).repeat_interleave(16).expand(32, -1).to(device)
        return Task(x[:, ::16], y[:, ::16], x, y)  # 1 support and 15 (+1) queries per class

    return model, tasks, F.cross_entropy, 0.4


def make_step(impl: str, algo: str, steps: int, model, loss_fn, inner_lr):
    """A function doing one meta-iteration on a task batch (outer Adam, or the Reptile update)."""
    params = P.get_params(model)
    outer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first_order = algo == "fomaml"
    if algo == "reptile":
        if not impl.startswith("mamlkit") or impl == "mamlkit-compiled":
            return None
        return lambda t: reptile.apply_params(params, reptile.reptile_step(
            model, params, t, loss_fn, inner_lr, steps, 1.0, batched=impl == "mamlkit-batched"))
    if impl == "mamlkit-compiled":  # --compile: the meta-gradient as one compiled function, fused outer Adam
        if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
            return None  # W1 only: on the CPU the conv model runs the loop (measured faster there)
        inner, how = InnerLoop.sgd(inner_lr, steps, first_order), maml.Execution(batched=True, compiled=True)
        fused = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

        def step_compiled(t):
            fused.zero_grad(set_to_none=True)
            maml.meta_backward(model, params, t, loss_fn, inner, how)
            fused.step()
        return step_compiled
    if impl.startswith("mamlkit"):
        inner = InnerLoop.sgd(inner_lr, steps, first_order)
        return lambda t: maml.maml_step(model, params, outer, t, loss_fn, inner,
                                        batched=impl == "mamlkit-batched")
    if impl == "higher":
        import higher

        inner = torch.optim.SGD(model.parameters(), lr=inner_lr)
        callback = (lambda grads: [g.detach() for g in grads]) if first_order else None

        def step_higher(t):
            outer.zero_grad()
            for i in range(len(t)):
                with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
                    for _ in range(steps):
                        diffopt.step(loss_fn(fmodel(t.x_support[i]), t.y_support[i]), grad_callback=callback)
                    (loss_fn(fmodel(t.x_query[i]), t.y_query[i]) / len(t)).backward()
            outer.step()
        return step_higher
    if impl == "torchopt":
        if first_order:
            return None
        import torchopt

        inner = torchopt.MetaSGD(model, lr=inner_lr)
        state = torchopt.extract_state_dict(model)

        def step_torchopt(t):
            outer.zero_grad()
            for i in range(len(t)):
                for _ in range(steps):
                    inner.step(loss_fn(model(t.x_support[i]), t.y_support[i]))
                (loss_fn(model(t.x_query[i]), t.y_query[i]) / len(t)).backward()
                torchopt.recover_state_dict(model, state)
            outer.step()
        return step_torchopt
    raise ValueError(impl)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure_one(work, algo, steps, impl, device, repeats, iters) -> dict | None:
    """Median seconds per meta-iteration over ``repeats`` runs of ``iters`` after warm-up; peak memory."""
    torch.manual_seed(0)
    model, tasks, loss_fn, inner_lr = workload(work, device)
    step = make_step(impl, algo, steps, model, loss_fn, inner_lr)
    if step is None:
        return None
    batches = [tasks() for _ in range(3)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    base = rss_mb()  # before the first step: its growth is the memory the meta-iteration needs
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step(batches[0])  # warm-up (and, compiled, the compilation)
    sync()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(iters):
            step(batches[i % 3])
        sync()
        times.append((time.perf_counter() - start) / iters)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
    sec = statistics.median(times)
    return {"workload": work, "algo": algo, "steps": steps, "impl": impl, "it_per_s": 1 / sec,
            "peak_mb": peak, "first_step_s": first,
            "memory": "cuda max_memory_allocated" if device.type == "cuda" else "CPU peak RSS growth"}


def available(impl: str) -> bool:
    return impl.startswith("mamlkit") or importlib.util.find_spec(impl) is not None


def run_all(args) -> list[dict]:
    rows = []
    for work in args.workloads:
        for algo in WORKLOADS[work]["algos"]:
            for steps in WORKLOADS[work]["steps"]:
                for impl in [i for i in args.impls if available(i)]:
                    if args.device.startswith("cuda"):  # max_memory_allocated resets per config: no process needed
                        row = measure_one(work, algo, steps, impl, torch.device(args.device), args.repeats,
                                          args.iters[work == "W2"])
                        if row:
                            rows.append(row)
                            print(row, file=sys.stderr, flush=True)
                        continue
                    cmd = [sys.executable, __file__, "--one", work, algo, str(steps), impl, "--device", args.device,
                           "--repeats", str(args.repeats), "--iters", str(args.iters[work == "W2"]), "0"]
                    out = subprocess.run(cmd, capture_output=True, text=True)
                    if out.returncode != 0:
                        print(f"{work} {algo} {steps} {impl} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                        continue
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    if row:
                        rows.append(row)
                        print(f"{work} {algo:7} k={steps} {impl:16} {row['it_per_s']:9.2f} it/s "
                              f"{row['peak_mb']:9.1f} MB", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| workload | algo | inner steps | impl | it/s | peak MB | × fastest peer (speed) |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        key = (row["workload"], row["algo"], row["steps"])
        same = [r for r in rows if (r["workload"], r["algo"], r["steps"]) == key
                and r["impl"] in ("higher", "torchopt")]
        best = max((r["it_per_s"] for r in same), default=None)
        ratio = f"{row['it_per_s'] / best:.2f}×" if best else "no peer"
        lines.append(f"| {row['workload']} | {row['algo']} | {row['steps']} | {row['impl']} | {row['it_per_s']:.2f} "
                     f"| {row['peak_mb']:.1f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2"], choices=list(WORKLOADS))
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, nargs=2, default=[20, 2], metavar=("W1", "W2"))
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--one", nargs=4, metavar=("WORKLOAD", "ALGO", "STEPS", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.one:
        work, algo, steps, impl = args.one
        print(json.dumps(measure_one(work, algo, int(steps), impl, device, args.repeats, args.iters[0])))
        return
    rows = run_all(args)
    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"device {meta}\n\n" + table(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
