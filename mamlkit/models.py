"""Models: the MLP of the MAML sine experiments (1-40-40-1, ReLU).

Introduced in notebook 02_inner_update.
"""

from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    """Fully connected ReLU network, ``sizes=(1, 40, 40, 1)`` as in the MAML paper."""

    def __init__(self, sizes=(1, 40, 40, 1)):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)
        self.sizes = tuple(sizes)
