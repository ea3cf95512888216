"""Time to accuracy on this CPU (issue 16): Omniglot 5-way 1-shot MAML from scratch, validation accuracy against
wall-clock minutes, with the test accuracy (600 fixed tasks, 95% CI) of snapshots taken on the way.

    # train (two cores: two tasks at once), stop at 20 minutes, keep a snapshot, evaluate it, go on:
    MAMLKIT_DATA=DIR OMP_NUM_THREADS=2 python -m mamlkit train --task omniglot --algo maml --device cpu \\
        --meta-batch-size 8 --workers 2 --val-every 100 --val-tasks 50 --checkpoint-every 100 \\
        --max-minutes 20 --no-progress --out runs/tta.pt
    cp runs/tta.pt runs/tta-20min.pt
    python -m mamlkit evaluate runs/tta-20min.pt --json > runs/tta-20min.json
    python -m mamlkit train --resume --out runs/tta.pt --max-minutes 100 ...
    # the curve (JSON for notebook 08) and the figure (README):
    python benchmarks/time_to_accuracy.py runs/tta.pt --test runs/tta-20min.json [...] \\
        --json data/omniglot-time-to-accuracy.json --png benchmarks/time_to_accuracy.png

The minutes are the run's own record (``wall_seconds`` in the checkpoint: training and its validation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from mamlkit.checkpoint import load_checkpoint  # noqa: E402
from mamlkit.course import plots  # noqa: E402


def curve(checkpoint, tests=(), command: str = "") -> dict:
    """The run's validation accuracy against minutes, and each test result at the minute its snapshot was taken."""
    state = load_checkpoint(checkpoint)
    history, seconds = state["history"], state.get("wall_seconds") or []
    if not seconds:
        raise SystemExit(f"{checkpoint} has no wall-clock record (trained before mamlkit recorded wall_seconds)")
    by_iteration = dict(zip(history["iteration"], seconds))
    out = {"command": command, "config": state["config"], "iteration": history["iteration"],
           "minutes": [s / 60 for s in seconds], "val": history["val_metric"], "test": []}
    for path in tests:
        result = json.loads(Path(path).read_text())
        result = result[0] if isinstance(result, list) else result
        snapshot = load_checkpoint(result["checkpoint"])
        steps = list(result["steps"])[-1]  # the protocol's last scored step (3 for Omniglot MAML)
        out["test"].append({"iteration": snapshot["iteration"], "minutes": by_iteration[snapshot["iteration"]] / 60,
                            "mean": result["steps"][steps]["mean"], "ci95": result["steps"][steps]["ci95"],
                            "steps": int(steps), "tasks": result["tasks"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--test", nargs="*", default=[], help="`mamlkit evaluate SNAPSHOT --json` outputs")
    parser.add_argument("--command", default="", help="the training command, recorded in the JSON")
    parser.add_argument("--json", help="write the curve here")
    parser.add_argument("--png", help="write the figure here")
    args = parser.parse_args()
    data = curve(args.checkpoint, args.test, args.command)
    for t in data["test"]:
        print(f"{t['minutes']:6.1f} min, iteration {t['iteration']}: test {t['mean']:.4f} ± {t['ci95']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    if args.png:
        ax = plots.plot_time_to_accuracy(data)
        ax.set_title("Omniglot 5-way 1-shot MAML on this 2-core CPU")
        ax.figure.set_size_inches(6, 4)
        ax.figure.savefig(args.png, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
