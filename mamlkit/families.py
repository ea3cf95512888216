"""Task families by name: the model, loss and metric each needs, training tasks, and the fixed
validation and test tasks. ``sinusoid`` needs nothing; ``omniglot`` loads the cached images.

Introduced in notebooks 04_maml (sinusoid) and 08_characters (omniglot).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .models import MLP, Conv4
from .tasks import TEST_SEED, Task, sample_sine_tasks, sine_test_tasks

VAL_SEED = TEST_SEED + 1
QUERY_POINTS = 100  # fresh query points per sine test task


def build_model(config) -> nn.Module:
    if config.task == "omniglot":
        return Conv4(config.ways)
    return MLP((1, *config.hidden, 1), config.init)


def loss_function(task: str):
    return F.cross_entropy if task == "omniglot" else F.mse_loss


def metric_name(task: str) -> str:
    return "accuracy" if task == "omniglot" else "mse"


@lru_cache(maxsize=4)
def _omniglot(data_dir, split: str):
    from .data.omniglot import load_omniglot, split_classes

    data = load_omniglot(data_dir)
    return data, split_classes(data, split)


def omniglot_sampler(config, part: str, shots: int, queries: int, device):
    from .episodes import EpisodeSampler

    data, splits = _omniglot(config.data_dir, config.split)
    return EpisodeSampler(data.images, splits[part], config.ways, shots, queries, rotate=True, device=device)


class TrainingTasks:
    """Draws meta-training tasks of the configured family from a seeded CPU generator."""

    def __init__(self, config, device):
        self.config, self.device = config, device
        if config.task == "omniglot":
            self.sampler = omniglot_sampler(config, "train", config.shots, config.queries, device)

    def sample(self, n: int, generator: torch.Generator) -> Task:
        if self.config.task == "omniglot":
            return self.sampler.sample(n, generator)
        return sample_sine_tasks(n, self.config.shots, self.config.queries, generator, self.device)


def fixed_tasks(config, part: str, n: int, shots: int, device, queries: int | None = None) -> Task:
    """The same ``n`` validation (``part="val"``) or test tasks on every run and device."""
    seed = TEST_SEED if part == "test" else VAL_SEED
    if config.task == "omniglot":
        sampler = omniglot_sampler(config, part, shots, queries or config.queries, device)
        return sampler.sample(n, torch.Generator().manual_seed(seed))
    return sine_test_tasks(n, shots, queries or QUERY_POINTS, seed, device)
