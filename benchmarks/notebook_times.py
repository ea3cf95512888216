"""Wall-clock seconds to execute every course notebook top to bottom (kernel start included), quiet and with
one other CPU-bound process running beside it (a busy laptop): the README's timing table.

    python benchmarks/notebook_times.py [--fast] [--load quiet busy] [NOTEBOOK ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
BUSY = "while True: pass"


def run(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--fast", action="store_true", help="MAMLKIT_FAST=1 (what CI runs)")
    parser.add_argument("--load", nargs="+", default=["quiet", "busy"], choices=["quiet", "busy"])
    args = parser.parse_args()
    os.environ["MAMLKIT_FAST"] = "1" if args.fast else "0"
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    times = {}
    for load in args.load:
        busy = subprocess.Popen([sys.executable, "-c", BUSY]) if load == "busy" else None
        try:
            for path in paths:
                times[path.stem, load] = run(path)
                print(f"{path.stem:22s} {load:5s} {times[path.stem, load]:6.1f} s", flush=True)
        finally:
            if busy is not None:
                busy.kill()
    print("\n| notebook | " + " | ".join(args.load) + " |\n|---|" + "---:|" * len(args.load))
    for path in paths:
        print(f"| {path.stem} | " + " | ".join(f"{times[path.stem, load]:.1f}" for load in args.load) + " |")
    print("| **whole course** | " + " | ".join(f"**{sum(times[p.stem, load] for p in paths):.0f}**"
                                             for load in args.load) + " |")


if __name__ == "__main__":
    main()
