"""Reptile's inner optimizer: Adam with β1 = 0, its update written out (usable under ``vmap``), and
the state the Reptile code keeps from task to task.

The Reptile code (``openai/supervised-reptile``, ``Reptile.train_step``) resets only the model's
weights between tasks: the inner Adam's moment estimates and step count carry over to the next task
and the next meta-iteration, and evaluation fine-tunes every test task from that state (restored after
each). ``AdamState`` is that state; ``Config.keep_inner_state`` turns it on (the default for Omniglot
Reptile). Introduced in notebook 06_reptile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .params import Params

BETAS = (0.0, 0.999)


def adam_update(p, g, m, s, t: int, lr: float, betas=BETAS, eps: float = 1e-8):
    """Step ``t`` (from 1) of torch.optim.Adam (no weight decay) as plain tensor arithmetic (usable under ``vmap``);
    β1 = 0 by default, as Reptile's inner loop."""
    b1, b2 = betas
    m = {k: b1 * m[k] + (1 - b1) * g[k] for k in p}
    s = {k: b2 * s[k] + (1 - b2) * g[k] * g[k] for k in p}
    step, root = lr / (1 - b1 ** t), (1 - b2 ** t) ** 0.5
    p = {k: p[k] - step * m[k] / (s[k].sqrt() / root + eps) for k in p}
    return p, m, s


@dataclass
class AdamState:
    """Adam's first and second moment estimates per parameter and its step count."""

    step: int
    exp_avg: Params
    exp_avg_sq: Params

    @classmethod
    def zeros(cls, params: Params) -> AdamState:
        """A fresh state (what ``torch.optim.Adam`` starts from)."""
        zero = {k: torch.zeros_like(v).detach() for k, v in params.items()}
        return cls(0, zero, {k: v.clone() for k, v in zero.items()})

    def clone(self) -> AdamState:
        return AdamState(self.step, {k: v.clone() for k, v in self.exp_avg.items()},
                         {k: v.clone() for k, v in self.exp_avg_sq.items()})

    def load_into(self, optimizer: torch.optim.Adam, params: Params) -> None:
        """Make ``optimizer`` (over the tensors of ``params``) continue from this state."""
        for k, p in params.items():
            optimizer.state[p] = {"step": torch.tensor(float(self.step)), "exp_avg": self.exp_avg[k].clone(),
                                  "exp_avg_sq": self.exp_avg_sq[k].clone()}

    def read_from(self, optimizer: torch.optim.Adam, params: Params) -> None:
        """Take over ``optimizer``'s state after its steps (in place)."""
        states = [optimizer.state[p] for p in params.values()]
        if any(not s for s in states):
            return  # no step taken
        self.step = int(states[0]["step"])
        self.exp_avg = {k: s["exp_avg"].detach().clone() for k, s in zip(params, states)}
        self.exp_avg_sq = {k: s["exp_avg_sq"].detach().clone() for k, s in zip(params, states)}

    def state_dict(self) -> dict:
        return {"step": self.step, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    @classmethod
    def from_state_dict(cls, state: dict, device="cpu") -> AdamState:
        def move(d):
            return {k: v.to(device) for k, v in d.items()}

        return cls(int(state["step"]), move(state["exp_avg"]), move(state["exp_avg_sq"]))
