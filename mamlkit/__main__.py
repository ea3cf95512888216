"""The command line: ``python -m mamlkit train ...`` and ``python -m mamlkit evaluate CHECKPOINT ...``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

import torch

from . import __version__, families
from .checkpoint import CheckpointError
from .config import ALGOS, Config
from .data.omniglot import SPLITS, OmniglotError
from .distributed import init_from_env, is_main
from .inner import OPTIMIZERS
from .training import TrainingDiverged, evaluate_checkpoint, meta_train, resolve_device


def _paper(key: str) -> str:
    def values(ways: int) -> set:
        return {str(f.defaults(a, ways).get(key, "sgd")) for f in families.REGISTRY.values() for a in ALGOS}

    five, wide = values(5), sorted(values(families.WIDE_WAYS) - values(5))
    at_20 = f"; {' or '.join(wide)} from {families.WIDE_WAYS} ways" if wide else ""
    return f"default: the paper's value ({' or '.join(sorted(five))} by algorithm{at_20})"


def import_families(argv) -> None:
    """Import the modules named by ``--import MODULE`` first: they register their own task families."""
    sys.path.insert(0, "")  # modules of the working folder, as ``python -m`` allows
    for i, arg in enumerate(argv):
        name = argv[i + 1] if arg == "--import" and i + 1 < len(argv) else arg.partition("=")[2]
        if arg == "--import" or arg.startswith("--import="):
            try:
                importlib.import_module(name)
            except ImportError as e:
                raise SystemExit(f"error: --import {name}: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mamlkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mamlkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="meta-train a model and save checkpoints")
    t.add_argument("--task", default="sinusoid", choices=list(families.REGISTRY),
                   help="task family (your own: --import MODULE that registers it)")
    t.add_argument("--algo", default="maml", choices=ALGOS)
    t.add_argument("--iterations", type=int, help=_paper("iterations"))
    t.add_argument("--inner-lr", type=float, help="α, " + _paper("inner_lr"))
    t.add_argument("--outer-lr", type=float, help="β (ε for Reptile), " + _paper("outer_lr"))
    t.add_argument("--inner-steps", type=int, help=_paper("inner_steps"))
    t.add_argument("--meta-batch-size", type=int, help=_paper("meta_batch_size"))
    t.add_argument("--shots", type=int, help="K support points per task, " + _paper("shots"))
    t.add_argument("--queries", type=int, help=_paper("queries"))
    t.add_argument("--ways", type=int, default=5, help="N classes per task (omniglot; default 5; from "
                   f"{families.WIDE_WAYS} on, the papers' 20-way hyper-parameters are the defaults)")
    t.add_argument("--split", default="maml", choices=SPLITS, help="omniglot character split")
    t.add_argument("--inner-optimizer", choices=list(OPTIMIZERS), help="Reptile's inner optimizer (" + _paper(
        "inner_optimizer") + ")")
    t.add_argument("--inner-batch", type=int, help="Reptile: examples per inner step (default: 10 for "
                   "Omniglot as the Reptile code, else the whole support set)")
    t.add_argument("--fresh-inner-state", action="store_true", help="Reptile with Adam: a fresh inner Adam for "
                   "every task (default: its state carried from task to task, as the Reptile code)")
    t.add_argument("--no-anneal", action="store_true", help="Reptile: keep ε constant (default: linear to 0)")
    t.add_argument("--batched", action=argparse.BooleanOptionalAction, default=None,
                   help="adapt the meta-batch as one vmap computation (default: when the model allows it)")
    t.add_argument("--val-every", type=int, default=1000)
    t.add_argument("--val-tasks", type=int, default=100, help="fixed validation tasks (default 100)")
    t.add_argument("--checkpoint-every", type=int, default=1000)
    t.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    t.add_argument("--max-minutes", type=float, help="stop (checkpointed, resumable) after this much wall time")
    _common(t)
    t.add_argument("--out", help="checkpoint path (default: runs/TASK-ALGO-seedSEED.pt)")

    e = sub.add_parser("evaluate", help="fine-tune on fixed test tasks; MSE or accuracy ± 95%% CI")
    e.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    e.add_argument("--shots", type=int, help="K support examples per class at test (default: 5 sine, 1 omniglot)")
    e.add_argument("--steps", type=int, nargs="+", help="inner steps to report (default: 1 5 10 sine; "
                   "the paper's test steps for omniglot)")
    e.add_argument("--inner-lr", type=float, help="fine-tuning step size (default: the paper's, 0.01 for sine)")
    e.add_argument("--inner-optimizer", choices=list(OPTIMIZERS), help="fine-tuning optimizer (default: paper's)")
    e.add_argument("--non-transductive", action="store_true", help="score each query on its own with the support "
                   "set (BatchNorm statistics of support + that query), as the Reptile paper's plain numbers; "
                   "default: the query set as one batch (transductive, as the MAML paper)")
    e.add_argument("--tasks", type=int, default=600, help="number of fixed test tasks (default 600)")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(e)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="Omniglot folder (default: $MAMLKIT_DATA/omniglot or data/omniglot)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--import", metavar="MODULE", help="import MODULE first (it registers your task families)")


def train(args) -> None:
    config = Config(task=args.task, algo=args.algo, iterations=args.iterations, inner_lr=args.inner_lr,
                    outer_lr=args.outer_lr, inner_steps=args.inner_steps, meta_batch_size=args.meta_batch_size,
                    shots=args.shots, queries=args.queries, seed=args.seed, inner_optimizer=args.inner_optimizer,
                    inner_batch=args.inner_batch, keep_inner_state=False if args.fresh_inner_state else None,
                    anneal=not args.no_anneal, batched=args.batched, val_every=args.val_every, val_tasks=args.val_tasks,
                    ways=args.ways, split=args.split, data_dir=args.data_dir,
                    checkpoint_every=args.checkpoint_every).resolved()
    out = args.out or f"runs/{config.task}-{config.algo}-seed{config.seed}.pt"
    run = meta_train(config, out, args.device, args.resume, progress=not args.no_progress,
                     max_minutes=args.max_minutes)
    if is_main():
        print(f"saved {out} after {run.iteration} iterations; validation metric {run.history['val_metric'][-1]:.4f}")


def evaluate(args) -> None:
    rows = []
    for path in args.checkpoints:
        steps = args.steps or []
        protocol = dict(shots=args.shots, inner_lr=args.inner_lr, inner_optimizer=args.inner_optimizer,
                        inner_steps=max(steps) if steps else None)
        row = evaluate_checkpoint(path, args.tasks, args.device, data_dir=args.data_dir,
                                  transductive=not args.non_transductive, report=steps or None, **protocol)
        row["steps"] = steps or ([1, 5, 10] if row["task"] == "sinusoid" else [row["protocol"]["inner_steps"]])
        rows.append(row)
    if args.json:
        print(json.dumps([{**{k: r[k] for k in ("checkpoint", "task", "algo", "metric", "ways", "protocol", "tasks")},
                           "steps": {s: {k: r[k][r["scored"].index(s)] for k in ("mean", "ci95", "median", "diverged")}
                                     for s in r["steps"]}}
                          for r in rows], indent=2))
        return
    for r in rows:
        p = r["protocol"]
        ways = f"{r['ways']}-way " if r["ways"] else ""
        print(f"{r['checkpoint']} ({r['task']}, {r['algo']}): {r['metric']} on {args.tasks} fixed test tasks, "
              f"{ways}{p['shots']}-shot, {p['inner_optimizer']} lr {p['inner_lr']}"
              f"{'' if p['transductive'] else ', each query on its own'} (mean ± 95% CI)")
    steps = rows[0]["steps"]
    scale = 100 if rows[0]["metric"] == "accuracy" else 1
    print("| checkpoint | algo | " + " | ".join(f"{s} step{'s' * (s != 1)}" for s in steps) + " |")
    print("|---|---|" + "---|" * len(steps))
    for r in rows:
        cells = " | ".join(_cell(r, s, scale) for s in steps)
        print(f"| {r['checkpoint']} | {r['algo']} | {cells} |")


def _cell(r: dict, step: int, scale: float) -> str:
    """mean ± 95% CI; where some tasks diverged (non-finite), say how many and give the median."""
    if step not in r["scored"]:
        return "—"
    i = r["scored"].index(step)
    text = f"{scale * r['mean'][i]:.3f} ± {scale * r['ci95'][i]:.3f}"
    if r["diverged"][i]:
        text = f"{text} ({r['diverged'][i]}/{r['tasks']} tasks diverged; median {scale * r['median'][i]:.3f})"
    return text


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import_families(argv)
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    try:
        args.device = init_from_env(args.device)
        resolve_device(args.device)
        {"train": train, "evaluate": evaluate}[args.command](args)
    except (ValueError, CheckpointError, TrainingDiverged, OmniglotError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is intact; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
