"""ANIL, Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals 2020): adapt only the head (the last
layer) in the inner loop; the body is learned by the outer loop alone. The inner gradient never
travels through the body, which is where ANIL saves its time.

The head is ``head_names(model)``: the parameter names in ``model.anil_head`` when the model (or the
family that builds it) sets that attribute, else the parameters of the last module, in registration
order, that holds parameters of its own (the final ``nn.Linear`` of ``MLP`` and ``Conv4``).

Introduced in notebook 09_beyond_maml.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from . import maml
from .inner import InnerLoop
from .params import Params, allow_partial, forward, get_params
from .tasks import Task


def head_names(model: nn.Module) -> list[str]:
    """The names of the head's parameters (see the module's docstring for how they are found)."""
    trainable = get_params(model)
    named = getattr(model, "anil_head", None)
    if named is not None:
        names = [named] if isinstance(named, str) else list(named)
        unknown = [n for n in names if n not in trainable]
        if unknown or not names:
            raise ValueError(f"model.anil_head names {unknown or 'nothing'}, not trainable parameters of the model; "
                             f"choose among {', '.join(list(trainable)[-4:])} …")
        return names
    for prefix, module in reversed(list(model.named_modules())):
        own = [f"{prefix}.{n}" if prefix else n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if own:
            return own
    raise ValueError("ANIL needs a model with trainable parameters (its last layer is the head)")


def split(model: nn.Module, params: Params | None = None) -> tuple[Params, Params]:
    """``(head, body)``: the model's trainable parameters (or ``params``) divided by ``head_names``."""
    params = get_params(model) if params is None else params
    head = set(head_names(model))
    return {k: v for k, v in params.items() if k in head}, {k: v for k, v in params.items() if k not in head}


@contextmanager
def head_only(model: nn.Module) -> Iterator[nn.Module]:
    """While inside, ``model`` runs with a dict of the head's parameters only; the body is the module's
    own tensors (``params.allow_partial``), so the outer loop's gradient reaches the body's ``.grad``."""
    before = getattr(model, "_mamlkit_partial", False)
    allow_partial(model)
    try:
        yield model
    finally:
        allow_partial(model, before)


def meta_backward(model: nn.Module, tasks: Task, loss_fn, inner: InnerLoop, batched: bool = False,
                  scale: float = 1.0) -> Tensor:
    """Add ANIL's meta-gradient to the ``.grad`` of every trainable parameter of ``model`` (the head
    through its adaptation, the body directly); return the mean query loss. ``inner`` adapts the head."""
    head, _ = split(model)
    with head_only(model):
        return maml.meta_backward(model, head, tasks, loss_fn, inner, maml.Execution(batched), scale)


def anil_loss(model: nn.Module, head: Params, tasks: Task, loss_fn, inner: InnerLoop,
              batched: bool = False) -> Tensor:
    """The mean query loss after adapting ``head`` (a dict of the head's parameters; the body is the
    model's own), differentiable w.r.t. both, for checks and plots."""
    with head_only(model):
        if batched:
            from .batched import batched_task_losses

            return batched_task_losses(model, head, tasks, loss_fn, inner).mean()
        losses = [loss_fn(forward(model, inner.adapt(model, loss_fn, head, t.x_support, t.y_support)[0], t.x_query),
                          t.y_query) for t in tasks]
    return torch.stack(losses).mean()
