"""The command line: ``python -m mamlkit train ...`` and ``python -m mamlkit evaluate CHECKPOINT ...``."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import shlex
import signal
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import torch

from . import __version__, families, report
from .atomic import remove_stale_temporaries
from .checkpoint import CheckpointError, load_run_state
from .config import ALGOS, METRIC_ONLY, SCHEDULES, Config
from .data.omniglot import SPLITS, OmniglotError, default_data_dir
from .distributed import init_from_env, is_main
from .divergence import TrainingDiverged
from .inner import OPTIMIZERS
from .interrupt import received, stop_on_signals
from .models import INITS
from .outpath import OutPathError, check_out
from .resume import merge
from .runlock import run_lock
from .runs import resolve_device
from .training import evaluate_checkpoint, meta_train

MAX_SEED = 2**63 - 1


def _paper(key: str) -> str:
    def values(ways: int) -> set:
        return {str(f.defaults(a, ways).get(key, "sgd")) for f in families.REGISTRY.values() for a in ALGOS
                if a not in METRIC_ONLY or f.metric == "accuracy"}  # protonet has no defaults on regression

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


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported as one ``error:`` line like every other error."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m mamlkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mamlkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="meta-train a model and save checkpoints")
    t.add_argument("--task", choices=list(families.REGISTRY), help="task family, default: sinusoid (on --resume: "
                   "the checkpoint's; your own: --import MODULE that registers it)")
    t.add_argument("--algo", choices=ALGOS, help="default: maml (on --resume: the checkpoint's)")
    t.add_argument("--iterations", type=int, help=_paper("iterations"))
    t.add_argument("--inner-lr", type=float, help="α, " + _paper("inner_lr"))
    t.add_argument("--outer-lr", type=float, help="β (ε for Reptile), " + _paper("outer_lr"))
    t.add_argument("--inner-steps", type=int, help=_paper("inner_steps"))
    t.add_argument("--meta-batch-size", type=int, help=_paper("meta_batch_size"))
    t.add_argument("--shots", type=int, help="K support points per task, " + _paper("shots"))
    t.add_argument("--queries", type=int, help=_paper("queries"))
    t.add_argument("--ways", type=int, help="N classes per task (omniglot; default 5; from "
                   f"{families.WIDE_WAYS} on, the papers' 20-way hyper-parameters are the defaults)")
    t.add_argument("--split", choices=SPLITS, help="omniglot character split (default maml)")
    t.add_argument("--inner-optimizer", choices=list(OPTIMIZERS), help="Reptile's inner optimizer (" + _paper(
        "inner_optimizer") + ")")
    t.add_argument("--inner-batch", type=int, help="Reptile: examples per inner step (default: 10 for "
                   "Omniglot as the Reptile code, else the whole support set)")
    t.add_argument("--fresh-inner-state", action="store_true", default=None, help="Reptile with Adam: a fresh "
                   "inner Adam for every task (default: its state carried from task to task, as the Reptile code)")
    t.add_argument("--no-anneal", action="store_true", default=None,
                   help="Reptile: keep ε constant (default: linear to 0)")
    t.add_argument("--outer-schedule", choices=list(SCHEDULES), help="outer step size over training: constant "
                   "(the papers; default) or cosine from --outer-lr to 0 (MAML++; the default of sine MAML)")
    t.add_argument("--init", choices=list(INITS), help="MLP weights: maml (the authors' truncated normal, "
                   "σ = 0.01; default) or torch (PyTorch's default; the default of sine MAML)")
    for name, what in (("lslr", "learned per-layer per-step inner step sizes"), ("msl", "the multi-step loss")):
        t.add_argument(f"--no-{name}", action="store_true", default=None, help=f"MAML++: without {what} "
                       "(default: on)")
    t.add_argument("--no-doa", action="store_true", default=None, help="MAML++ and MAML: without derivative-order "
                   "annealing (first order early) (default: on for MAML++ and sine MAML; with --init maml "
                   "--outer-schedule constant, sine MAML is the paper's protocol exactly)")
    t.add_argument("--msl-iterations", type=int, help="MAML++: iterations over which the multi-step loss's "
                   "weights anneal to the last step (default: a tenth of --iterations)")
    t.add_argument("--first-order-iterations", type=int, help="MAML++ and MAML with DOA: first-order "
                   "meta-gradients for this many iterations, second order after (default: a third of --iterations)")
    t.add_argument("--imaml-lambda", type=float, help="iMAML: λ of the proximal term λ/2 |φ − θ|² (default: 10 sine, "
                   "2 omniglot; larger keeps I + H/λ positive definite, smaller adapts further)")
    t.add_argument("--cg-steps", type=int, help="iMAML: conjugate-gradient iterations for the implicit gradient "
                   "(default 5; the largest relative CG residual is logged per history line)")
    t.add_argument("--batched", action=argparse.BooleanOptionalAction, default=None,
                   help="adapt the meta-batch as one vmap computation (default: when the model allows it)")
    t.add_argument("--max-memory", type=float, metavar="MB", help="batched: process the meta-batch in chunks "
                   "whose graph fits MB megabytes (same gradient, less memory; default: all tasks at once)")
    t.add_argument("--workers", type=int, help="maml/fomaml per-task loop: adapt N tasks at once, one CPU thread "
                   "each (default 1; the same gradient, summed in task order)")
    t.add_argument("--compile", dest="compiled", action="store_true", default=None,
                   help="maml/fomaml batched: the meta-gradient as one torch.compile'd function and a fused outer "
                   "Adam (≈3× faster on the sine MLP, about a minute to compile first; the same gradient to rounding)")
    t.add_argument("--val-every", type=int, help="validate every N iterations (default 1000)")
    t.add_argument("--val-tasks", type=int, help="fixed validation tasks (default 100)")
    t.add_argument("--checkpoint-every", type=int, help="save every N iterations (default 1000)")
    t.add_argument("--resume", action="store_true", help="continue from --out if it exists, with its settings; "
                   "only --iterations, --max-minutes, --data-dir, --device, --no-progress, --val-every, --max-memory, "
                   "--checkpoint-every, --workers, --compile and (with a warning) --inner-lr / --outer-lr may change")
    t.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out with a new run")
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
    e.add_argument("--paired", action="store_true", help="also each checkpoint minus the first on the same test "
                   "tasks: mean ± 95%% CI of the per-task difference (the test for comparing two methods)")
    _common(e)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="Omniglot folder (default: $MAMLKIT_DATA/omniglot or data/omniglot)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--seed", type=int, help="random seed, 0 to 2**63 - 1 (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--import", metavar="MODULE", help="import MODULE first (it registers your task families)")


# Config fields set by a train flag of the same name (others: see ``_asked``).
_FLAGS = ("task", "algo", "iterations", "inner_lr", "outer_lr", "inner_steps", "meta_batch_size", "shots", "queries",
          "seed", "inner_optimizer", "inner_batch", "batched", "val_every", "val_tasks", "ways", "split",
          "checkpoint_every", "outer_schedule", "init", "max_memory", "workers", "compiled", "msl_iterations",
          "first_order_iterations", "imaml_lambda", "cg_steps")
_NEW_RUN = dict(task="sinusoid", algo="maml", seed=0, ways=5, split="maml", val_every=1000, val_tasks=100,
                checkpoint_every=1000)


def _flag(name: str) -> str:
    special = {"keep_inner_state": "--fresh-inner-state", "anneal": "--no-anneal", "lslr": "--no-lslr",
               "msl": "--no-msl", "doa": "--no-doa"}
    return special.get(name, f"--{name.replace('_', '-')}")


def _asked(args) -> dict:
    """The Config fields the user set explicitly (``None``: not given)."""
    asked = {name: getattr(args, name) for name in _FLAGS}
    asked["keep_inner_state"] = False if args.fresh_inner_state else None
    asked["anneal"] = False if args.no_anneal else None
    for name in ("lslr", "msl", "doa"):
        asked[name] = False if getattr(args, f"no_{name}") else None
    return asked


def _check_common(args) -> None:
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed must be an integer from 0 to {MAX_SEED}, got {args.seed}")
    device = str(args.device)
    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise ValueError(f"--device {device} is not supported: use auto, cpu or cuda (cuda:N for the N-th GPU)")
    if device.startswith("cuda:") and torch.cuda.is_available() and int(device[5:]) >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         "numbered from 0")


def _check_train(args) -> None:
    if args.max_minutes is not None and not (math.isfinite(args.max_minutes) and args.max_minutes > 0):
        raise ValueError(f"--max-minutes must be a finite number of minutes > 0, got {args.max_minutes}")
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the checkpoint at --out and --overwrite replaces it: choose one")


def _resume_command(out, args) -> str:
    """The command that continues the run saved at ``out`` (its settings come from the checkpoint)."""
    extra = "" if args.data_dir is None else f" --data-dir {shlex.quote(str(args.data_dir))}"
    if args.device_asked != "auto":
        extra += f" --device {args.device_asked}"
    return f"python -m mamlkit train --resume --out {shlex.quote(str(out))}{extra}"


def _saved_iteration(out) -> int | None:
    try:
        return int(torch.load(out, map_location="cpu", weights_only=True)["iteration"])
    except Exception:
        return None


def _checkpoint_note(args) -> str:
    """What ``--out`` holds now, for a message after a failure: never claims a checkpoint that is not there."""
    out = getattr(args, "out_path", None)
    if out is None or not Path(out).is_file():
        return "no checkpoint was written"
    iteration = _saved_iteration(out)
    if iteration is None:
        return f"{out} is there but unreadable"
    before = getattr(args, "out_before", None)
    changed = before is None or _signature(out) != before
    if not changed and not args.resume:
        return f"{out} still holds the run it was to replace (iteration {iteration}); this run saved nothing"
    return f"{out} holds iteration {iteration}: continue with `{_resume_command(out, args)}`"


def _signature(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def train(args) -> int:
    _check_common(args)
    _check_train(args)
    asked = _asked(args)
    main_process = is_main()
    out = Path(args.out or "runs/{}-{}-seed{}.pt".format(*(asked[k] or _NEW_RUN[k] for k in ("task", "algo", "seed"))))
    args.out_path = out
    with ExitStack() as stack:
        if main_process:
            check_out(out, args.resume, args.overwrite)
            try:
                stack.enter_context(run_lock(out))
            except OSError as e:
                raise OutPathError(f"cannot write beside --out {out} ({e.strerror}); choose an --out in a folder you "
                                   "can write") from e
            remove_stale_temporaries(out)  # left by a killed run; we hold the lock, so nobody writes them now
        args.out_before = _signature(out)
        stack.enter_context(stop_on_signals())
        resuming = args.resume and out.is_file()
        if resuming:
            config = _resume_config(out, asked, args)
        else:
            if args.resume:
                print(f"note: no checkpoint at {out} yet: starting a new run there", file=sys.stderr)
            config = Config(**{**_NEW_RUN, **{k: v for k, v in asked.items() if v is not None},
                               "data_dir": args.data_dir}).resolved()
        if args.fresh_inner_state and config.algo != "reptile":
            raise ValueError(f"--fresh-inner-state is an option of --algo reptile (its inner Adam's state), not of "
                             f"{config.algo}: drop it, or use --algo reptile")
        if config.algo != "reptile" and config.inner_optimizer != "sgd":
            raise ValueError(f"--inner-optimizer {config.inner_optimizer} is Reptile's inner optimizer; {config.algo} "
                             "adapts with SGD as in the paper: drop --inner-optimizer, or use --algo reptile")
        run = meta_train(config, out, args.device, resuming, progress=not args.no_progress,
                         max_minutes=args.max_minutes)
    if not main_process:
        return 0
    metric = run.history["val_metric"][-1] if run.history["val_metric"] else float("nan")
    signum = received()
    if signum is not None:
        print(f"interrupted by {signal.Signals(signum).name}: saved {out} at iteration {run.iteration} of "
              f"{run.config.iterations}; continue with `{_resume_command(out, args)}`", file=sys.stderr)
        return 128 + signum
    print(f"saved {out} after {run.iteration} iterations; validation metric {metric:.4f}")
    if run.iteration < run.config.iterations:
        print(f"stopped at the --max-minutes limit; continue with `{_resume_command(out, args)}`")
    return 0


def _resume_config(out, asked: dict, args) -> Config:
    """The checkpoint's configuration with the changes ``resume.merge`` allows; the data location is the
    one given now (or the default), never the path stored in the checkpoint."""
    state = load_run_state(out)
    stored = Config.from_dict(state["config"])
    config, warnings = merge(stored, asked, out, flag=_flag)
    for line in warnings:
        print(line, file=sys.stderr)
    done = state["iteration"]
    if config.iterations <= done:
        given = "" if asked["iterations"] is None else f" (--iterations {asked['iterations']})"
        raise ValueError(f"{out} has already done {done} of its {config.iterations} iterations{given}: pass "
                         f"--iterations N with N > {done} to train it further")
    if config.algo == "reptile" and config.anneal and config.iterations != stored.iterations:
        print(f"note: Reptile's ε is now annealed to 0 over {config.iterations} iterations instead of "
              f"{stored.iterations}", file=sys.stderr)
    return replace(config, data_dir=args.data_dir)


def _check_evaluate(args) -> None:
    _check_common(args)
    if args.tasks < 1:
        raise ValueError(f"--tasks must be an integer >= 1, got {args.tasks}")
    if args.steps and min(args.steps) < 0:
        raise ValueError(f"--steps must be integers >= 0 (0: before fine-tuning), got {args.steps}")
    if args.shots is not None and args.shots < 1:
        raise ValueError(f"--shots must be an integer >= 1, got {args.shots}")
    if args.paired and len(args.checkpoints) < 2:
        raise ValueError("--paired compares checkpoints with the first one: give two or more")


def evaluate(args) -> int:
    _check_evaluate(args)
    # The data location is the one given (or the default), never a path stored in a checkpoint.
    data_dir = args.data_dir or str(default_data_dir())
    rows = []
    for path in args.checkpoints:
        steps = args.steps or []
        most = max(steps) if steps else None
        protocol = dict(shots=args.shots, inner_lr=args.inner_lr, inner_optimizer=args.inner_optimizer,
                        inner_steps=None if most is None else max(most, 1))  # --steps 0: no step is scored
        row = evaluate_checkpoint(path, args.tasks, args.device, data_dir=data_dir,
                                  transductive=not args.non_transductive, report=steps or None, **protocol)
        if most is not None:
            row["protocol"]["inner_steps"] = most
        default = [1, 5, 10] if row["task"] == "sinusoid" else [row["protocol"]["inner_steps"]]
        row["steps"] = steps or ([0] if row["scored"] == [0] else default)  # [0]: no fine-tuning (protonet)
        rows.append(row)
    if args.paired:
        report.add_paired(rows)
    print(report.as_json(rows) if args.json else report.tables(rows, args.tasks))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import_families(argv)
    args = build_parser().parse_args(argv)
    args.device_asked = args.device
    try:
        _check_common(args)
        torch.manual_seed(args.seed or 0)
        if args.command == "train":  # only training joins a torchrun process group
            args.device = init_from_env(args.device)
        resolve_device(args.device)
        return {"train": train, "evaluate": evaluate}[args.command](args)
    except TrainingDiverged as e:
        print(f"error: {e}; {_checkpoint_note(args)}", file=sys.stderr)
        return 2
    except (ValueError, CheckpointError, OmniglotError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "train":
            print(f"error: interrupted; {_checkpoint_note(args)}", file=sys.stderr)
        else:
            print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as e:  # a disk that fills or a file that vanishes outside a checkpoint write
        where = f" ({e.filename})" if e.filename else ""
        note = f"; {_checkpoint_note(args)}" if args.command == "train" else ""
        print(f"error: {e.strerror or e}{where}{note}", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
