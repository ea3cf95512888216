"""The README's table of the methods beyond the lesson on sine waves: each shipped checkpoint evaluated with its
own meta-test protocol on the course's 600 fixed test tasks (5 shots), MSE after 1 / 5 / 10 steps (mean ± 95% CI,
median, diverged count), and the paired difference to the shipped MAML on the same tasks.

    python benchmarks/sine_paired.py [--tasks 600] [--algos metasgd anil mamlpp imaml] [--files RUN.pt ...]

``--files``: other checkpoints (e.g. a ``--compile`` run) in the same table, paired against the shipped MAML.
"""

from __future__ import annotations

import argparse

import torch

from mamlkit import evaluation, tasks
from mamlkit.checkpoint import SHIPPED
from mamlkit.runs import load_run
from mamlkit.training import evaluate_run

STEPS = (1, 5, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--algos", nargs="*",
                        default=["fomaml", "reptile", "metasgd", "anil", "mamlpp", "mamlpp-lslr", "imaml"])
    parser.add_argument("--files", nargs="*", default=[], help="more checkpoints, paired against the shipped MAML")
    args = parser.parse_args()
    torch.set_num_threads(1)
    test = tasks.sine_test_tasks(args.tasks)
    results = {}
    paths = {algo: SHIPPED / f"sinusoid-{algo}.pt" for algo in ["maml", *args.algos]}
    for name, path in {**paths, **{f: f for f in args.files}}.items():
        run = load_run(path, "cpu")
        results[name] = (run.iteration, evaluate_run(run, test))
    print(f"| method (iterations) | {' | '.join(f'{k} step(s)' for k in STEPS)} | − MAML, paired: "
          f"{' / '.join(str(k) for k in STEPS)} steps |")
    print("|---|" + "---|" * (len(STEPS) + 1))
    for algo, (iterations, result) in results.items():
        cells = []
        for k in STEPS:
            mean, ci = result.at(k)
            bad = int((~torch.isfinite(result.per_task[:, result.steps.index(k)])).sum())
            median = float(result.per_task[:, result.steps.index(k)].nanmedian())
            cells.append(f"{mean:.3f} ± {ci:.3f}" + (f" ({bad} NaN, median {median:.3f})" if bad else ""))
        paired = "—" if algo == "maml" else " / ".join(
            "{:+.3f} ± {:.3f}".format(*evaluation.paired_difference(result, results["maml"][1], k)) for k in STEPS)
        print(f"| {algo} ({iterations:,}) | {' | '.join(cells)} | {paired} |")


if __name__ == "__main__":
    main()
