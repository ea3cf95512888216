"""Catch a diverging run before it is saved: a non-finite loss, a loss that explodes relative to the
model's own loss before training (or to the run's running median), parameters that blow up, or a
non-finite optimizer state (the outer Adam or Reptile's kept inner Adam).

The check runs at every log point, and a checkpoint is only written at a log point, so a checkpoint
never holds non-finite weights or optimizer state: the one on disk is the last good one.
"""

from __future__ import annotations

import statistics

import torch
from torch import Tensor

from . import params as P

EXPLOSION = 100.0  # a loss median this many times its reference means the run diverged
REFERENCE_TASKS = 5  # validation tasks used to measure the loss before training


class TrainingDiverged(RuntimeError):
    """The loss, the parameters or the optimizer state became non-finite or exploded."""


class DivergenceGuard:
    """Remembers where the run started and checks each window of training losses against it.

    For MAML, FOMAML and the pretrained baseline the reference is the loss of the model, without any
    adaptation, on a few validation tasks: a meta-loss (after adaptation) ``EXPLOSION`` times that has
    learned nothing useful (``--inner-lr 100`` on sine gives ~2e4 against ~4 from the first iteration).
    A later window also counts as exploded when it is ``EXPLOSION`` times the running median of the
    earlier windows and above the reference. Reptile's "loss" is the size of its move, annealed to 0, so
    for Reptile only non-finite values and exploding parameters count.
    """

    def __init__(self, run, val_tasks, loss_fn):
        self.hint = (f"Lower --inner-lr (now {run.config.inner_lr}) or --outer-lr (now {run.config.outer_lr})")
        params = P.get_params(run.model)
        self.norm0 = float(P.norm(P.detach(params)))
        self.reference = None
        if run.config.algo != "reptile":
            with torch.no_grad():
                n = min(REFERENCE_TASKS, len(val_tasks))
                losses = [float(loss_fn(P.forward(run.model, params, t.x_query), t.y_query))
                          for t in val_tasks[:n]]
            self.reference = statistics.median(losses)
        self.medians: list[float] = []

    def check(self, run, losses: Tensor) -> None:
        """Raise ``TrainingDiverged`` if the window ``losses`` (the last ``len(losses)`` iterations) or
        the run's current state shows divergence; else remember the window's median."""
        first = run.iteration - len(losses) + 1
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            self._fail(first + int(bad[0]), "the loss became non-finite")
        median = float(losses.median())
        if self.reference is not None and self.reference > 0:
            running = statistics.median(self.medians) if self.medians else None
            if median > EXPLOSION * self.reference:
                self._fail(run.iteration, f"the loss exploded (median {median:.3g} over iterations {first}-"
                           f"{run.iteration}, against {self.reference:.3g} before any adaptation)")
            if running is not None and running > 0 and median > EXPLOSION * running and median > self.reference:
                self._fail(run.iteration, f"the loss exploded (median {median:.3g} over iterations {first}-"
                           f"{run.iteration}, against a running median of {running:.3g})")
        problem = nonfinite_state(run)
        if problem:
            self._fail(run.iteration, problem)
        norm = float(P.norm(P.detach(P.get_params(run.model))))
        if self.norm0 > 0 and norm > EXPLOSION * self.norm0:
            self._fail(run.iteration, f"the parameters exploded (norm {norm:.3g}, {self.norm0:.3g} at the start)")
        self.medians.append(median)

    def _fail(self, iteration: int, what: str):
        raise TrainingDiverged(f"training diverged at iteration {iteration}: {what}. {self.hint}")


def nonfinite_state(run) -> str | None:
    """What is non-finite in the run's weights, outer optimizer or kept inner Adam state, else ``None``."""
    for name, t in run.model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            return f"the weight {name} became non-finite"
    if run.optimizer is not None:
        for state in run.optimizer.state_dict()["state"].values():
            if any(torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
                   for v in state.values()):
                return "the outer Adam optimizer's state became non-finite"
    if run.inner_state is not None:
        moments = [*run.inner_state.exp_avg.values(), *run.inner_state.exp_avg_sq.values()]
        if any(not torch.isfinite(t).all() for t in moments):
            return "the inner Adam state became non-finite"
    return None
