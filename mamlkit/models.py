"""Models: the MLP of the MAML sine experiments (1-40-40-1, ReLU) and Conv4 for Omniglot.

Introduced in notebook 02_inner_update.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch._C._functorch import get_interpreter_stack

INITS = ("maml", "torch")


class Linear(nn.Linear):
    """``nn.Linear`` whose weight and bias may carry a leading task dimension: with every task's parameters
    stacked (``(tasks, out, in)``) and inputs ``(tasks, n, in)``, the whole meta-batch is one batched matrix
    product (``torch.baddbmm``); with ordinary parameters it is ``nn.Linear``."""

    def forward(self, x):
        if self.weight.dim() == 2:
            return F.linear(x, self.weight, self.bias)
        return torch.baddbmm(self.bias.unsqueeze(-2), x, self.weight.mT)


class MLP(nn.Sequential):
    """Fully connected ReLU network, ``sizes=(1, 40, 40, 1)`` as in the MAML paper.

    ``init="maml"`` initialises as the authors' code (weights ~ truncated normal, σ = 0.01, biases 0);
    ``init="torch"`` keeps PyTorch's default. ``stacked``: its forward also takes parameters with a leading
    task dimension (``Linear``), which the batched path uses instead of ``vmap`` (fewer, larger operations).
    """

    stacked = True

    def __init__(self, sizes=(1, 40, 40, 1), init: str = "maml"):
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(a, b))
            if init == "maml":
                nn.init.trunc_normal_(layers[-1].weight, std=0.01, a=-0.02, b=0.02)
                nn.init.zeros_(layers[-1].bias)
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)
        self.sizes = tuple(sizes)


class BatchNorm(nn.Module):
    """Batch normalisation with the current batch's statistics only (no running statistics, as MAML).

    In the per-task loop it is the fused kernel (``F.batch_norm``: exact to second order there, and
    ~2× faster than plain ops on the CPU); inside a ``torch.func`` transform (the batched ``vmap`` path)
    it is written with plain tensor ops, because the fused kernel returns wrong second-order gradients
    under ``vmap`` when its weight is adapted in the inner loop (torch 2.13, tested). Both agree (tested).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        if under_transform():
            return self.plain(x)
        return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)

    def plain(self, x):
        """The same normalisation in plain tensor ops (what ``vmap`` differentiates correctly)."""
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dims, keepdim=True)
        shape = [1, -1] + [1] * (x.dim() - 2)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


def under_transform() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``) is running: activations are then wrapped
    tensors, and only plain ops are known to be differentiated exactly to second order. Under ``torch.compile``
    (``--compile``, which only traces transforms) the plain ops too."""
    return torch.compiler.is_compiling() or bool(get_interpreter_stack())


class Conv4(nn.Sequential):
    """The MAML paper's Omniglot network: 4 × [conv 3×3, 64, stride 2 → BatchNorm → ReLU], then a
    linear layer (28 → 14 → 7 → 4 → 2 pixels, 64·2·2 = 256 features) to ``ways`` classes.

    ``head=False`` leaves out the linear layer: the network returns its ``features`` (256) per image, the
    embedding prototypical networks compare (``protonet.py``). The parameter names of the body are the
    same either way (``0.weight`` … ``9.bias``).
    """

    def __init__(self, ways: int = 5, channels: int = 64, in_channels: int = 1, image_size: int = 28,
                 head: bool = True):
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, stride=2, padding=1),
                       BatchNorm(channels), nn.ReLU()]
            image_size = (image_size + 1) // 2
        features = channels * image_size * image_size
        super().__init__(*layers, nn.Flatten(), *([nn.Linear(features, ways)] if head else []))
        self.features = features
        self.ways = ways if head else None
