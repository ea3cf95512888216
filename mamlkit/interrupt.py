"""Stop training cleanly on SIGINT (Ctrl-C) or SIGTERM (``docker stop``, SLURM, systemd) or at a
time limit: the signal only sets a flag, the loop finishes its iteration (so the run's state is
whole), saves a checkpoint and returns. A second signal interrupts at once (``KeyboardInterrupt``).

The command line installs the handlers (``stop_on_signals``); the library alone never changes them.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

from . import distributed

_received: list[int] = []  # the signals received while the handlers are installed
_installed = False


def received() -> int | None:
    """The first signal received (``signal.SIGINT`` or ``signal.SIGTERM``), else ``None``."""
    return _received[0] if _received else None


def _handle(signum, frame) -> None:
    if _received:  # the second one: stop now
        raise KeyboardInterrupt
    _received.append(signum)


@contextmanager
def stop_on_signals():
    """While the block runs, SIGINT and SIGTERM ask the training loop to save and stop."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handle) for s in (signal.SIGINT, signal.SIGTERM)}
    _received.clear()
    _installed = True
    try:
        yield
    finally:
        _installed = False
        for s, handler in previous.items():
            signal.signal(s, handler)


class Stop:
    """Whether the loop should stop after this iteration: a time limit passed or a signal came
    (on every process at once under ``torchrun``)."""

    def __init__(self, max_minutes: float | None = None):
        self.deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes

    def due(self) -> bool:
        if self.deadline is None and not _installed:
            return False
        late = self.deadline is not None and time.monotonic() > self.deadline
        return distributed.any_true(late or received() is not None)
