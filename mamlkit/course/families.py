"""The course's own task families: the widgets' line tasks (a 2-parameter picture) and the
homework project's quadratics. Built on ``mamlkit.families.Family`` as a learner's family would be.
"""

from __future__ import annotations

import torch

from ..families import Family
from ..tasks import Task


def _split(x, y, shots: int, info) -> Task:
    return Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], info)


class Lines(Family):
    """Linear regression tasks y = a x + c (a ~ U[-2, 2], c ~ U[-1, 1], x ~ U[-2, 2]); ``info`` = (a, c)."""

    name = "lines"

    def sample(self, n, split, shots, queries, generator, device="cpu"):
        a, c = 4 * torch.rand(n, 1, 1, generator=generator) - 2, 2 * torch.rand(n, 1, 1, generator=generator) - 1
        x = 4 * torch.rand(n, shots + queries, 1, generator=generator) - 2
        return _split(x, a * x + c, shots, torch.cat([a, c], 1)[:, :, 0]).to(device)


class Quadratics(Family):
    """y = a x² + b x + c with a, b, c ~ U[-1, 1] and x ~ U[-2, 2] (homework 5's reference sampler);
    ``info`` = (a, b, c). ``sampler`` replaces the reference with a learner's
    ``sample(n, shots, queries, generator) -> Task``."""

    name = "quadratics"
    COEFFICIENTS, X_RANGE = (-1.0, 1.0), (-2.0, 2.0)

    def __init__(self, sampler=None):
        self.sampler = sampler

    def sample(self, n, split, shots, queries, generator, device="cpu"):
        if self.sampler is not None:
            return self.sampler(n, shots, queries, generator).to(device)
        low, high = self.COEFFICIENTS
        coefficients = low + (high - low) * torch.rand(n, 3, generator=generator, dtype=torch.float64)
        low, high = self.X_RANGE
        x = low + (high - low) * torch.rand(n, shots + queries, 1, generator=generator, dtype=torch.float64)
        a, b, c = (coefficients[:, i].reshape(-1, 1, 1) for i in range(3))
        return _split(x, a * x**2 + b * x + c, shots, coefficients).to(device, torch.float32)
