"""What every notebook does first: seed, report versions and device, set small figures; the
``MAMLKIT_FAST`` switch for CI; and ``load_or_train``, which loads a shipped checkpoint or, when
it is missing, trains a short stand-in run (cached under ``runs/fallback/``).

Introduced in notebook 00_welcome.
"""

from __future__ import annotations

import os
import platform
import time
import weakref
from pathlib import Path

import matplotlib as mpl
import torch

import mamlkit

from ..checkpoint import SHIPPED
from ..config import Config
from ..runs import Run, load_run, resolve_device
from ..training import meta_train

FAST = os.environ.get("MAMLKIT_FAST") == "1"
# The notebooks' work is small tensors (an MLP of 40 units, Conv4 on 5–15 images): with PyTorch's default of one
# thread per core, every small op waits for a second core, and on a laptop where anything else is busy that wait
# costs 10× or more. Measured with `python benchmarks/threads.py --rounds 2` (30 MAML steps, fresh processes,
# alternating) on 2 cores already shared with other jobs (load ≈ 12): alone 19 s on 1 thread against 346 s on 2
# (18×), beside one more CPU-bound process 22 s against 296 s (13×). One thread wins. So setup_notebook uses one
# thread; MAMLKIT_THREADS=N overrides it (say, a large idle machine, or a big model on the CPU).
NOTEBOOK_THREADS = 1
# where load_or_train looks for sinusoid-{algo}.pt: data/, or a folder of your own runs
CHECKPOINT_DIR = Path(os.environ.get("MAMLKIT_CHECKPOINTS", SHIPPED))
FALLBACK_DIR = SHIPPED.parent / "runs" / "fallback"
FIGURE_DEFAULTS = {
    "figure.figsize": (4.8, 3.0),
    "figure.dpi": 90,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": "small",
    "legend.frameon": False,
}


# present(): figures and widget controls large enough to read from the back of a lecture hall
LECTURE_FIGURES = {
    "figure.figsize": (7.2, 4.5),
    "figure.dpi": 110,
    "font.size": 15,
    "legend.fontsize": "medium",
    "lines.linewidth": 2.5,
    "lines.markersize": 9,
}
LECTURE_CSS = """<style>body {
  --jp-widgets-font-size: 20px; --jp-widgets-inline-height: 40px;
  --jp-widgets-inline-width: 520px; --jp-widgets-inline-label-width: 160px;
  --jp-widgets-slider-handle-size: 22px;
}</style>"""
_before_lecture: dict = {}


def present(on: bool = True) -> None:
    """Lecture mode: large figures, fonts and widget controls for a projector; ``present(False)`` undoes it.

    Call it before creating the figures and explorers you show. Introduced in notebook 00_welcome.
    """
    from IPython.display import HTML, display, update_display

    if on and not _before_lecture:
        _before_lecture.update({key: mpl.rcParams[key] for key in LECTURE_FIGURES})
    mpl.rcParams.update(LECTURE_FIGURES if on else _before_lecture)
    if not on:
        _before_lecture.clear()
    show = display if on else update_display  # the same output area holds the CSS: emptying it reverts it
    show(HTML(LECTURE_CSS if on else ""), display_id="mamlkit-present")


def fast(normal, in_fast):
    """``in_fast`` when ``MAMLKIT_FAST=1`` (CI), else ``normal``: ``n_tasks = fast(600, 100)``."""
    return in_fast if FAST else normal


def versions() -> dict:
    """Versions of what the course needs, as name -> string."""
    import ipywidgets
    import matplotlib

    return {"python": platform.python_version(), "torch": torch.__version__, "ipywidgets": ipywidgets.__version__,
            "matplotlib": matplotlib.__version__, "mamlkit": mamlkit.__version__}


def notebook_threads() -> int:
    """The CPU threads the notebooks use: ``NOTEBOOK_THREADS``, or ``$MAMLKIT_THREADS`` when set."""
    value = os.environ.get("MAMLKIT_THREADS", str(NOTEBOOK_THREADS))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"MAMLKIT_THREADS must be a whole number of threads ≥ 1, got {value!r}: unset it or "
                         f"write e.g. MAMLKIT_THREADS=1")
    return int(value)


def setup_notebook(seed: int = 0, device: str = "auto") -> torch.device:
    """Seed torch, set the CPU thread count (``notebook_threads``), print versions, threads and the device,
    set small-figure defaults; return the device."""
    threads = notebook_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    device = resolve_device(device)
    mpl.rcParams.update(FIGURE_DEFAULTS)
    line = ", ".join(f"{k} {v}" for k, v in versions().items())
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"{line}\ndevice: {device}{gpu}, {threads} CPU thread{'s' * (threads > 1)}"
          + ("  [MAMLKIT_FAST=1: short runs]" if FAST else ""))
    return device


def load_or_train(algo: str, iterations: int | None = None, device="cpu", verbose: bool = True) -> Run:
    """The trained run for ``algo`` (maml, fomaml, reptile, pretrain).

    Loads ``data/sinusoid-{algo}.pt`` (or ``$MAMLKIT_CHECKPOINTS/sinusoid-{algo}.pt``) when it
    exists, else trains a short stand-in ``meta_train`` run (``iterations``, default 1500, or 300
    with ``MAMLKIT_FAST=1``) cached in ``runs/fallback/``. Use ``run.model``, ``run.config``,
    ``run.history``.
    """
    shipped = CHECKPOINT_DIR / f"sinusoid-{algo}.pt"
    if shipped.is_file():
        run = load_run(shipped, device)
        source = f"loaded {_short(shipped)}"
    else:
        iterations = iterations or fast(1500, 300)
        out = fallback_path(algo, iterations)
        config = Config(algo=algo, iterations=iterations, val_every=max(iterations // 5, 1), val_tasks=50,
                        checkpoint_every=iterations)
        run = meta_train(config, out=out, device=device, resume=True, progress=False)
        source = f"{_short(shipped)} not found: using a short stand-in run ({_short(out)})"
    run.model.eval()
    if verbose:
        print(f"{algo}: {source}, {run.iteration} iterations")
    return run


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(SHIPPED.parent))
    except ValueError:
        return str(path)


def fallback_path(algo: str, iterations: int) -> Path:
    return FALLBACK_DIR / f"sinusoid-{algo}-{iterations}.pt"


class _Box:
    """Holds a tensor saved for backward; its finalizer frees the bytes it counted."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


def measure_cost(fn, repeats: int = 3) -> tuple[float, int]:
    """Run ``fn()`` (e.g. a meta-loss and its backward) and return (best seconds over ``repeats``,
    peak bytes of tensors autograd kept alive for backward, counted with ``saved_tensors_hooks``).
    """
    live = peak = 0

    def pack(t):
        nonlocal live, peak
        n = t.numel() * t.element_size()
        live += n
        peak = max(peak, live)
        box = _Box(t)
        weakref.finalize(box, _release, n)
        return box

    def _release(n):
        nonlocal live
        live -= n

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), peak
