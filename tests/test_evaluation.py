"""``evaluation.paired_difference``: the per-task difference of two results on the same tasks, against a
reference computed by hand with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mamlkit.evaluation import EvalResult, paired_difference


def results(n=600, steps=(0, 1, 10), seed=0):
    """Two methods on the same tasks: a shared per-task difficulty (large) plus a small method effect."""
    rng = np.random.default_rng(seed)
    hard = rng.gamma(2.0, 0.5, size=(n, len(steps)))
    a = hard + rng.normal(0.0, 0.05, size=hard.shape)
    b = hard + 0.02 + rng.normal(0.0, 0.05, size=hard.shape)
    return (EvalResult(list(steps), torch.tensor(a, dtype=torch.float32), "mse"),
            EvalResult(list(steps), torch.tensor(b, dtype=torch.float32), "mse"), a, b)


def reference(a, b, j):
    d = a[:, j].astype(np.float64) - b[:, j].astype(np.float64)
    return d.mean(), 1.96 * d.std(ddof=1) / np.sqrt(len(d))


@pytest.mark.parametrize("step, j", [(0, 0), (1, 1), (10, 2)])
def test_paired_difference_matches_numpy(step, j):
    ra, rb, a, b = results()
    mean, ci = paired_difference(ra, rb, step)
    want_mean, want_ci = reference(np.float32(a), np.float32(b), j)
    assert mean == pytest.approx(want_mean, rel=1e-5, abs=1e-7) and ci == pytest.approx(want_ci, rel=1e-5)
    assert isinstance(mean, float) and isinstance(ci, float)


def test_pairing_is_what_finds_the_difference():
    """The case the overlap rule gets wrong: the two intervals overlap, the paired interval excludes 0."""
    ra, rb, _, _ = results()
    (ma, ca), (mb, cb) = ra.at(1), rb.at(1)
    assert abs(ma - mb) < ca + cb  # the methods' own intervals overlap...
    mean, ci = paired_difference(ra, rb, 1)
    assert mean + ci < 0  # ...yet a is lower than b: the paired interval excludes 0
    back, ci_back = paired_difference(rb, ra, 1)
    assert back == pytest.approx(-mean) and ci_back == pytest.approx(ci)


def test_refuses_results_that_are_not_paired():
    ra, rb, _, _ = results()
    fewer = EvalResult(rb.steps, rb.per_task[:100], "mse")
    with pytest.raises(ValueError, match="same tasks") as error:
        paired_difference(ra, fewer, 1)
    assert "\n" not in str(error.value) and "600 vs 100 tasks" in str(error.value)
    other_steps = EvalResult([0, 1, 5], rb.per_task, "mse")
    with pytest.raises(ValueError, match=r"steps \[0, 1, 10\] vs \[0, 1, 5\]"):
        paired_difference(ra, other_steps, 1)
    with pytest.raises(ValueError, match="was not scored"):
        paired_difference(ra, rb, 5)


def test_single_task_has_no_interval():
    one = EvalResult([0, 1], torch.tensor([[1.0, 0.5]]), "mse")
    mean, ci = paired_difference(one, EvalResult([0, 1], torch.tensor([[1.0, 0.25]]), "mse"), 1)
    assert mean == pytest.approx(0.25) and np.isnan(ci)
