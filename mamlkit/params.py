"""Parameters as ``dict[str, Tensor]``: a forward pass through any module, and the tree arithmetic
(add, sub, scale, lerp, mean) that makes Reptile and the training loop read like the papers.

Introduced in notebook 02_inner_update.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]


def get_params(model: nn.Module) -> Params:
    """The model's trainable parameters as a name -> tensor dict (the meta-parameters θ)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def forward(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """Run ``model`` on ``x`` with ``params`` in place of its own parameters (buffers are kept).

    ``params`` must name every trainable parameter of ``model``: a missing one would silently fall back
    to the module's own tensor, and its gradient would go to the model instead of the dict. Models
    marked with ``allow_partial`` accept a partial dict on purpose (see there)."""
    check_complete(model, params)
    return functional_call(model, params, (x,))


def check_complete(model: nn.Module, params: Params) -> None:
    """Refuse a parameter dict that leaves out a trainable parameter of ``model`` (one line, naming it)."""
    if getattr(model, "_mamlkit_partial", False):
        return
    missing = [k for k, p in model.named_parameters() if p.requires_grad and k not in params]
    if missing:
        raise ValueError(f"the parameter dict has no {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}: "
                         "pass every trainable parameter (params.get_params(model)), or mark the model with "
                         "params.allow_partial(model) to adapt only some of them on purpose (ANIL)")


def allow_partial(model: nn.Module, allow: bool = True) -> nn.Module:
    """Let ``model`` run with a dict naming only some of its parameters: the others are the module's
    own tensors, used as they are. This is ANIL's inner loop (adapt only the head, a dict of the head's
    parameters): the body is trained by the outer loop alone, its gradient arriving in the module's
    ``.grad``. Returns the model."""
    model._mamlkit_partial = allow
    return model


def detach(params: Params, requires_grad: bool = False) -> Params:
    """A copy cut from the graph; with ``requires_grad`` it is a fresh leaf to differentiate."""
    return {k: v.detach().clone().requires_grad_(requires_grad) for k, v in params.items()}


def add(a: Params, b: Params) -> Params:
    return {k: a[k] + b[k] for k in a}


def sub(a: Params, b: Params) -> Params:
    return {k: a[k] - b[k] for k in a}


def scale(a: Params, factor: float) -> Params:
    return {k: factor * v for k, v in a.items()}


def lerp(start: Params, end: Params, weight: float) -> Params:
    """``start + weight * (end - start)``: Reptile's move toward the adapted parameters."""
    return {k: start[k] + weight * (end[k] - start[k]) for k in start}


def mean(many: list[Params]) -> Params:
    """Element-wise mean of several parameter dicts with the same keys."""
    if not many:
        raise ValueError("mean() needs at least one parameter dict")
    return {k: torch.stack([p[k] for p in many]).mean(0) for k in many[0]}


def norm(a: Params) -> Tensor:
    """Euclidean norm of all tensors taken together."""
    return torch.sqrt(sum((v.double() ** 2).sum() for v in a.values()))


def flatten(a: Params) -> Tensor:
    """All tensors as one vector (in key order); handy for closed-form checks."""
    return torch.cat([v.reshape(-1) for v in a.values()])
