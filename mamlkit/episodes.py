"""N-way K-shot episodes over a labelled image array: classes, drawings and rotations drawn from a
seeded generator (the same seed gives the same task), labels shuffled per task.

Introduced in notebook 08_characters.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .tasks import Task


class EpisodeSampler:
    """Sample N-way tasks with ``shots`` support and ``queries`` query drawings per class.

    ``images``: (classes, drawings, H, W) uint8 array (255 = ink); ``classes``: the indices this
    sampler may use (a split). With ``rotate`` each class of each task gets a random multiple of 90°.
    """

    def __init__(self, images, classes, ways: int, shots: int, queries: int, rotate: bool = True, device="cpu"):
        classes = np.asarray(classes)
        drawings = images.shape[1]
        if ways < 2 or ways > len(classes):
            raise ValueError(f"ways must be between 2 and the {len(classes)} classes of this split, got {ways}")
        if shots < 1 or queries < 1:
            raise ValueError(f"shots (K) and queries must be >= 1, got K={shots}, queries={queries}")
        if shots + queries > drawings:
            raise ValueError(f"shots + queries = {shots + queries} exceeds the {drawings} drawings per class")
        self.images = torch.as_tensor(np.asarray(images)[classes], device=device)  # (C, D, H, W) uint8
        self.classes = torch.as_tensor(classes)
        self.ways, self.shots, self.queries, self.rotate = ways, shots, queries, rotate
        self.device = torch.device(device)

    def sample(self, n: int, generator: torch.Generator) -> Task:
        """``n`` tasks; ``info`` holds (class index, rotation) per way, shape (n, ways, 2)."""
        c, d = self.images.shape[:2]
        picks = torch.rand(n, c, generator=generator).argsort(1)[:, : self.ways]  # (n, ways), random order
        draws = torch.rand(n, self.ways, d, generator=generator).argsort(-1)[..., : self.shots + self.queries]
        turns = torch.randint(0, 4 if self.rotate else 1, (n, self.ways), generator=generator)
        x = self.images[picks.to(self.device)[..., None], draws.to(self.device)].float() / 255  # (n, ways, K+Q, H, W)
        x = _rotate(x, turns.to(self.device))
        labels = torch.arange(self.ways, device=self.device).expand(n, self.ways)
        support, query = x[:, :, : self.shots], x[:, :, self.shots:]
        info = torch.stack([self.classes[picks], turns], -1)
        return Task(_flat(support), _labels(labels, self.shots), _flat(query), _labels(labels, self.queries), info)


def _rotate(x: Tensor, turns: Tensor) -> Tensor:
    """Rotate each class's drawings by ``turns`` × 90°: x (n, ways, k, H, W), turns (n, ways)."""
    all_turns = torch.stack([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])  # (4, n, ways, k, H, W)
    index = turns[None, :, :, None, None, None].expand(1, *x.shape)
    return all_turns.gather(0, index)[0]


def _flat(x: Tensor) -> Tensor:
    n, ways, k, h, w = x.shape
    return x.reshape(n, ways * k, 1, h, w)


def _labels(labels: Tensor, k: int) -> Tensor:
    return labels.repeat_interleave(k, dim=1)
