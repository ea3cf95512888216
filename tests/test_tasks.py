"""Sine-wave tasks exactly as in the MAML paper, seeded and reproducible on any device."""

import math

import pytest
import torch

from mamlkit.tasks import AMPLITUDE, PHASE, Task, sample_sine_tasks, sine, sine_test_tasks


def test_shapes_and_ranges():
    tasks = sample_sine_tasks(2000, shots=10, queries=7, generator=torch.Generator().manual_seed(1))
    assert tasks.x_support.shape == (2000, 10, 1) and tasks.x_query.shape == (2000, 7, 1)
    amplitude, phase = tasks.info[:, 0], tasks.info[:, 1]
    assert AMPLITUDE[0] <= amplitude.min() and amplitude.max() <= AMPLITUDE[1]
    assert PHASE[0] <= phase.min() and phase.max() <= PHASE[1] == pytest.approx(math.pi)
    assert amplitude.max() - amplitude.min() > 4.5 and phase.max() - phase.min() > 3.0  # spans the ranges
    x = torch.cat([tasks.x_support, tasks.x_query], 1)
    assert x.min() >= -5 and x.max() <= 5 and x.min() < -4.9 and x.max() > 4.9
    y = sine(tasks.x_support, amplitude[:, None, None], phase[:, None, None])
    torch.testing.assert_close(tasks.y_support, y)


def test_same_seed_same_tasks_and_different_seed_different_tasks():
    a = sample_sine_tasks(5, 10, 10, torch.Generator().manual_seed(3))
    b = sample_sine_tasks(5, 10, 10, torch.Generator().manual_seed(3))
    c = sample_sine_tasks(5, 10, 10, torch.Generator().manual_seed(4))
    for f in ("x_support", "y_support", "x_query", "y_query", "info"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.x_support, c.x_support)


def test_fixed_test_set(device):
    tasks = sine_test_tasks(device=device)
    assert len(tasks) == 600 and tasks.x_support.shape == (600, 5, 1) and tasks.x_query.shape == (600, 100, 1)
    assert tasks.x_support.device.type == device.type
    again = sine_test_tasks(device="cpu")
    assert torch.equal(tasks.x_support.cpu(), again.x_support)  # same tasks on every device
    more_shots = sine_test_tasks(shots=10)
    assert torch.equal(more_shots.info, again.info)  # the same 600 sine waves whatever K


def test_task_batch_indexing_and_iteration():
    tasks = sample_sine_tasks(3, 4, 2)
    assert len(tasks) == 3 and isinstance(tasks[1], Task)
    assert torch.equal(tasks[1].x_support, tasks.x_support[1])
    assert [t.x_query.shape for t in tasks] == [(2, 1)] * 3


@pytest.mark.parametrize("shots,queries", [(0, 5), (-1, 5), (5, 0)])
def test_bad_counts(shots, queries):
    with pytest.raises(ValueError, match="shots|queries"):
        sample_sine_tasks(2, shots, queries)
