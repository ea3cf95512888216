"""One thread against the default for the notebooks' small-tensor work: the same 30 MAML steps (sine, meta-batch
25, MLP 40-40, one inner step) run in fresh processes, alternating thread counts, quiet and beside one CPU-bound
process; prints the median seconds per setting and the ratio. ``python benchmarks/threads.py [--rounds N]``.
Its result chose ``mamlkit.course.notebook.NOTEBOOK_THREADS``."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

WORK = """
import time, torch, torch.nn.functional as F
torch.set_num_threads({threads})
from mamlkit import maml, models, params, tasks
torch.manual_seed(0)
model = models.MLP()
theta = params.get_params(model)
opt = torch.optim.Adam(theta.values(), 1e-3)
g = torch.Generator().manual_seed(0)
batches = [tasks.sample_sine_tasks(25, 10, 10, g) for _ in range(30)]
start = time.perf_counter()
for batch in batches:
    opt.zero_grad()
    maml.maml_loss(model, theta, batch, F.mse_loss, 0.01).backward()
    opt.step()
print(time.perf_counter() - start)
"""


def once(threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", WORK.format(threads=threads)], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(rounds: int, counts=(1, 2)) -> dict:
    times = {n: [] for n in counts}
    for _ in range(rounds):
        for n in counts:  # alternating, so that a change in the machine's load hits both alike
            times[n].append(once(n))
    return {n: statistics.median(t) for n, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            result = measure(args.rounds)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        print(f"{'beside a busy process' if busy else 'quiet':22s} 1 thread {result[1]:.2f} s, 2 threads "
              f"{result[2]:.2f} s (median of {args.rounds}): 2 threads / 1 thread = {result[2] / result[1]:.1f}×",
              flush=True)


if __name__ == "__main__":
    main()
