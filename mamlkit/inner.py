"""The inner loop, written once: small functional optimizers with explicit state, one inner step,
and the trajectory of parameters after 0…k steps.

An inner optimizer is an object with ``init(params) -> state`` and ``update(params, grads, state) ->
(params, state)`` (in the spirit of TorchOpt's ``GradientTransformation``): ``sgd(lr)`` (``lr`` a number,
or a tensor per parameter as Meta-SGD learns) and ``adam(lr, betas=(0, 0.999), eps)`` (Reptile's inner
loop). Their state is a plain value (``None`` for SGD, an ``AdamState`` of tensors and a step count for
Adam), so the same step runs in the per-task loop and under ``torch.func.vmap`` and is checkpointed as
tensors. Whether the outer update differentiates through a step is a property of the step
(``InnerLoop.first_order``), not of the optimizer: both SGD and Adam are differentiable.

Introduced in notebooks 02_inner_update (SGD) and 06_reptile (Adam, the kept state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._C._functorch import is_batchedtensor
from torch.func import functional_call, grad, vmap

from .params import Params, check_complete

BETAS = (0.0, 0.999)  # Adam with β1 = 0: the Reptile paper's inner optimizer
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class SGD:
    """``θ ← θ − α g``; ``lr`` is a number or a dict of tensors, one per parameter (Meta-SGD, MAML++)."""

    lr: float | Params

    def init(self, params: Params) -> None:
        return None

    def update(self, params: Params, grads: Params, state: None = None) -> tuple[Params, None]:
        if state is not None:
            raise ValueError("SGD keeps no state (an inner state is the inner Adam's): use inner_optimizer='adam'")
        lr = self.lr
        return {k: p - (lr[k] if isinstance(lr, dict) else lr) * grads[k] for k, p in params.items()}, state


@dataclass
class AdamState:
    """Adam's first and second moment estimates per parameter and its step count (a pytree of tensors
    and one integer). The Reptile code keeps it from task to task (``Config.keep_inner_state``)."""

    step: int
    exp_avg: Params
    exp_avg_sq: Params

    @classmethod
    def zeros(cls, params: Params) -> AdamState:
        """A fresh state (what ``torch.optim.Adam`` starts from)."""
        zero = {k: torch.zeros_like(v).detach() for k, v in params.items()}
        return cls(0, zero, {k: v.clone() for k, v in zero.items()})

    def detach(self) -> AdamState:
        return AdamState(self.step, {k: v.detach() for k, v in self.exp_avg.items()},
                         {k: v.detach() for k, v in self.exp_avg_sq.items()})

    def tensors(self) -> list[Tensor]:
        return [*self.exp_avg.values(), *self.exp_avg_sq.values()]

    def with_tensors(self, tensors: list[Tensor], step: int) -> AdamState:
        """The state at ``step`` with ``tensors`` (in ``tensors()``'s order) as its moments."""
        n = len(self.exp_avg)
        return AdamState(step, dict(zip(self.exp_avg, tensors[:n])), dict(zip(self.exp_avg_sq, tensors[n:])))

    def state_dict(self) -> dict:
        return {"step": self.step, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    @classmethod
    def from_state_dict(cls, state: dict, device="cpu") -> AdamState:
        def move(d):
            return {k: v.to(device) for k, v in d.items()}

        return cls(int(state["step"]), move(state["exp_avg"]), move(state["exp_avg_sq"]))


@dataclass(frozen=True)
class Adam:
    """``torch.optim.Adam`` (no weight decay) as tensor arithmetic in the same order of operations, so
    it equals the library optimizer to the last bit, runs under ``vmap`` and can be differentiated."""

    lr: float
    betas: tuple = BETAS
    eps: float = 1e-8

    def init(self, params: Params) -> AdamState:
        return AdamState.zeros(params)

    def update(self, params: Params, grads: Params, state: AdamState) -> tuple[Params, AdamState]:
        (b1, b2), t = self.betas, state.step + 1
        m = {k: torch.lerp(state.exp_avg[k], g, 1 - b1) for k, g in grads.items()}
        s = {k: torch.addcmul(state.exp_avg_sq[k] * b2, g, g, value=1 - b2) for k, g in grads.items()}
        step_size, root = self.lr / (1 - b1 ** t), (1 - b2 ** t) ** 0.5
        new = {k: torch.addcdiv(p, m[k], _sqrt(s[k]) / root + self.eps, value=-step_size) for k, p in params.items()}
        return new, AdamState(t, m, s)


@dataclass(frozen=True)
class StepwiseSGD:
    """SGD with a step size per inner step: ``lr[k][s]`` is the step size of parameter ``k`` at step ``s``
    (MAML++'s LSLR, one learned number per layer and step); steps past the last use the last one. A learned step
    size below 0 is used as 0: a negative step climbs the support loss, and the sine runs diverged there (README);
    clamped, the outer loop can switch a layer's adaptation off but not reverse it."""

    lr: Params

    def init(self, params: Params) -> None:
        return None

    def at(self, step: int) -> SGD:
        """The plain SGD of inner step ``step``."""
        return SGD({k: v[min(step, v.shape[0] - 1)].clamp(min=0) for k, v in self.lr.items()})

    def update(self, params: Params, grads: Params, state: None = None) -> tuple[Params, None]:
        raise TypeError("StepwiseSGD has a step size per inner step: use .at(step).update, as InnerLoop.step does")


def _sqrt(s: Tensor) -> Tensor:
    """``s.sqrt()``; differentiated, zero where ``s`` is zero (a parameter whose gradient is exactly zero,
    e.g. behind a dead ReLU) instead of ``0 · ∞ = NaN``. The same values either way."""
    if not s.requires_grad:
        return s.sqrt()
    positive = s > 0
    return torch.where(positive, torch.where(positive, s, torch.ones_like(s)).sqrt(), torch.zeros_like(s))


def sgd(lr: float | Params) -> SGD:
    return SGD(lr)


def adam(lr: float, betas=BETAS, eps: float = 1e-8) -> Adam:
    return Adam(lr, tuple(betas), eps)


OPTIMIZERS = {"sgd": sgd, "adam": adam}  # the inner optimizers by name (configurations, command line)


def by_name(name: str, lr: float) -> SGD | Adam:
    """The inner optimizer called ``name`` with step size ``lr``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown inner optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr)


def _under_vmap(x: Tensor) -> bool:
    return is_batchedtensor(x)


def task_losses(loss_fn: LossFn, pred: Tensor, y: Tensor) -> Tensor:
    """One loss per task of stacked predictions and targets (a leading task dimension): the example-mean
    losses ``F.mse_loss`` and ``F.cross_entropy`` as one unreduced call, any other ``loss_fn`` under ``vmap``."""
    if loss_fn is F.mse_loss:
        return F.mse_loss(pred, y, reduction="none").flatten(1).mean(1)
    if loss_fn is F.cross_entropy:
        return F.cross_entropy(pred.flatten(0, 1), y.flatten(0, 1), reduction="none").view(len(pred), -1).mean(1)
    return vmap(loss_fn)(pred, y)


def support_grads(model: nn.Module, loss_fn: LossFn, params: Params, x: Tensor, y: Tensor,
                  create_graph: bool, stacked: bool = False) -> Params:
    """∇ of the support loss w.r.t. ``params``; kept in the graph (second order) with ``create_graph``.
    ``torch.autograd.grad`` in the per-task loop (any model, BatchNorm buffers included), ``torch.func.grad``
    under ``vmap``; ``stacked``: parameters and data of all tasks with a leading task dimension (a model with
    ``stacked = True``), ∇ of the sum of the tasks' losses, which is each task's gradient in its own slice."""
    check_complete(model, params)
    if _under_vmap(x):
        g = grad(lambda p: loss_fn(functional_call(model, p, (x,)), y))(params)
        return g if create_graph else {k: v.detach() for k, v in g.items()}
    params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    pred = functional_call(model, params, (x,))
    loss = task_losses(loss_fn, pred, y).sum() if stacked else loss_fn(pred, y)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)))


def step_batch(x: Tensor, y: Tensor, step: int, batch: int | None) -> tuple[Tensor, Tensor]:
    """The examples inner step ``step`` trains on: all of them, or the ``step``-th block of ``batch``."""
    if batch is None:
        return x, y
    return x[step * batch: (step + 1) * batch], y[step * batch: (step + 1) * batch]


@dataclass(frozen=True)
class InnerLoop:
    """What adaptation does: ``steps`` updates of ``optimizer`` on the support set; ``first_order`` cuts
    the gradient out of the graph (FOMAML, Reptile, evaluation); ``batch`` = b trains step ``s`` on
    examples ``s·b … s·b + b − 1`` (Reptile's mini-batches, see ``reptile.minibatch_order``); ``stacked``:
    parameters and data carry a leading task dimension (``batched.batched_task_losses``)."""

    optimizer: SGD | Adam | StepwiseSGD
    steps: int = 1
    first_order: bool = False
    batch: int | None = None
    stacked: bool = False

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"inner_steps must be an integer >= 0, got {self.steps!r}")
        lr = self.optimizer.lr
        if not isinstance(lr, dict) and (not isinstance(lr, (int, float)) or not lr > 0):
            raise ValueError(f"inner_lr (alpha) must be a number > 0, got {lr!r}; the paper uses 0.01 for sine waves")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"inner_batch must be an integer >= 1, got {self.batch!r}")

    @classmethod
    def sgd(cls, lr: float | Params, steps: int = 1, first_order: bool = False) -> InnerLoop:
        """``steps`` SGD steps of ``lr`` (MAML's inner loop)."""
        return cls(SGD(lr), steps, first_order)

    def step(self, model: nn.Module, loss_fn: LossFn, params: Params, state, x: Tensor, y: Tensor, index: int = 0):
        """Inner update number ``index`` (0-based; it matters to ``StepwiseSGD`` only); returns ``(params,
        state)``. The one place that decides second order."""
        g = support_grads(model, loss_fn, params, x, y, create_graph=not self.first_order, stacked=self.stacked)
        optimizer = self.optimizer.at(index) if isinstance(self.optimizer, StepwiseSGD) else self.optimizer
        return optimizer.update(params, g, state)

    def trajectory(self, model: nn.Module, loss_fn: LossFn, params: Params, x: Tensor, y: Tensor, state=None,
                   graph: bool = True) -> tuple[list[Params], object]:
        """The parameters after 0, 1, …, ``steps`` inner steps and the optimizer's final state.
        ``state`` continues a kept one (default: fresh). ``graph=False`` cuts every step out of the
        graph (evaluation, Reptile, plots)."""
        loop = self if graph or self.first_order else replace(self, first_order=True)
        if not graph:
            params = {k: v.detach() for k, v in params.items()}
        state = self.optimizer.init(params) if state is None else state
        path = [params]
        for s in range(self.steps):
            params, state = loop.step(model, loss_fn, params, state, *step_batch(x, y, s, self.batch), index=s)
            if not graph:
                params = {k: v.detach() for k, v in params.items()}
            path.append(params)
        return path, state

    def adapt(self, model: nn.Module, loss_fn: LossFn, params: Params, x: Tensor, y: Tensor, state=None,
              graph: bool = True):
        """The adapted parameters θ′ (and the optimizer's state) after ``steps`` inner steps."""
        path, state = self.trajectory(model, loss_fn, params, x, y, state, graph)
        return path[-1], state

