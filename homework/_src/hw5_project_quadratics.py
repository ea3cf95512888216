# %% [markdown]
# # Homework 5 · Project: MAML on a new task family (8 points)
#
# The MAML paper meta-trains on sine waves. Here you take the same algorithm, the same network
# (MLP 1-40-40-1) and the same code to a **new task family**: quadratic functions
#
# $$y = a x^2 + b x + c, \qquad a, b, c \sim U[-1, 1], \qquad x \sim U[-2, 2],$$
#
# 5-shot regression. Settings that work for sine waves do not work as well here: you will **tune** them.
#
# **In this assignment you will**
# - write a sampler for the new task family;
# - choose MAML's hyperparameters within a compute budget so that the meta-trained model adapts to
#   *new* quadratics from 5 points with a low query error.
#
# **Prerequisites:** notebooks 01_tasks and 04_maml; homework 1-2.
#
# **How this is graded.** Write your code where it says `# YOUR CODE HERE` (delete the
# `raise NotImplementedError()` line), then run the test cell below it: it prints one line, ✔ or ✘
# with a hint. Hidden tests run the same cells with other inputs when your work is graded (the
# project: other test quadratics): a ✔ is necessary, not sufficient. Do not rename the functions or
# change their arguments; do not edit the other cells. Before you submit: *Kernel → Restart Kernel
# and Run All Cells*.

# %%
import torch

from mamlkit import models, tasks
from mamlkit.course import project
from mamlkit.course.notebook import setup_notebook

device = setup_notebook(seed=0)

# %% [markdown]
# ## 5.1 The task family (3 points)
#
# Return `tasks.Task(x_support, y_support, x_query, y_query, info)` for `n` tasks: `x_support` and
# `y_support` of shape `(n, shots, 1)`, `x_query` and `y_query` of shape `(n, queries, 1)`, `info` of
# shape `(n, 3)` holding each task's $(a, b, c)$, all `float32`. Draw **every** random number from
# `generator` (`torch.rand(..., generator=generator)`), so that a seed gives the same tasks on every
# machine. `tasks.sine_tasks` in `mamlkit/tasks.py` does the same for sine waves.

# %% answer id=quadratic_tasks
def quadratic_tasks(n, shots, queries, generator):
    """n tasks y = a x² + b x + c with (a, b, c) ~ U[-1, 1]³ and x ~ U[-2, 2]."""
    ### BEGIN SOLUTION
    info = 2 * torch.rand(n, 3, generator=generator) - 1
    x = 4 * torch.rand(n, shots + queries, 1, generator=generator) - 2
    a, b, c = (info[:, i].reshape(n, 1, 1) for i in range(3))
    y = a * x**2 + b * x + c
    return tasks.Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], info)
    ### END SOLUTION


# %% tests id=test_quadratic_tasks points=3
assert project.check_quadratic_tasks(quadratic_tasks)
### BEGIN HIDDEN TESTS
def _hidden_quadratic_tasks():
    batch = quadratic_tasks(3000, 2, 3, torch.Generator().manual_seed(11))
    assert batch.x_support.shape == (3000, 2, 1) and batch.y_query.shape == (3000, 3, 1)
    x = torch.cat([batch.x_support, batch.x_query], 1)
    assert abs(x.mean()) < 0.05 and abs(x.std() - 4 / 12**0.5) < 0.05, "x should be uniform on [-2, 2]"
    assert batch.info.mean(0).abs().max() < 0.05, "a, b, c should be centred on 0"
    assert (batch.info.std(0) - 2 / 12**0.5).abs().max() < 0.03, "a, b, c should be uniform on [-1, 1]"
    corr = torch.corrcoef(batch.info.T) - torch.eye(3)
    assert corr.abs().max() < 0.08, "draw a, b and c independently"
    assert not torch.equal(batch.x_support[:, 0], batch.x_query[:, 0]), "query points must be new points"
    one = quadratic_tasks(1, 50, 1, torch.Generator().manual_seed(12))
    assert one.x_support.shape == (1, 50, 1) and one.x_support.std() > 0.5, "each point draws its own x"


_hidden_quadratic_tasks()
### END HIDDEN TESTS

# %% [markdown]
# ## 5.2 Tune MAML (5 points)
#
# The cell after yours meta-trains the MLP with MAML (second order, Adam outer steps, batched
# tasks) on tasks drawn by **your** `quadratic_tasks`, with the hyperparameters your function
# returns: `project.project_config` wraps your sampler as a task family (`mamlkit.families.Family`)
# and `mamlkit.training.meta_train` trains on it, the same loop as in notebook 04.
#
# | key | symbol | meaning |
# |---|---|---|
# | `inner_lr` | $\alpha$ | inner step size, also used when adapting to test tasks |
# | `inner_steps` | $k$ | inner steps, in training and when adapting to test tasks (at most 10) |
# | `outer_lr` | $\beta$ | Adam's step size for the outer update |
# | `meta_steps` | | number of outer updates |
# | `meta_batch_size` | | tasks per outer update |
# | `first_order` (optional) | | `True` for First-Order MAML (default `False`) |
#
# **Budget:** `meta_steps × meta_batch_size × inner_steps ≤ 8000` (a few seconds on a laptop CPU).
# **Target:** after adapting with $k$ steps of $\alpha$ on the 5 support points of each new quadratic,
# a mean query MSE **below 0.5**, and below **3/4** of what the same adaptation reaches from the
# network's random initialisation (without meta-training, the best $\alpha$ and $k$ reach about 0.5:
# the target is met by meta-learning, not by adaptation alone). The hidden test measures both on other
# quadratics than the check below.
#
# Start from the sine-wave settings of notebook 04 and change one thing at a time: what does a
# larger $\alpha$ do, more inner steps, a larger $\beta$?

# %% answer id=hyperparameters
def hyperparameters():
    """MAML's settings for quadratic tasks, within the budget."""
    # the sine-wave settings of notebook 04, a starting point:
    # dict(inner_lr=0.01, inner_steps=1, outer_lr=0.001, meta_steps=200, meta_batch_size=10)
    ### BEGIN SOLUTION
    return dict(inner_lr=0.02, inner_steps=5, outer_lr=0.01, meta_steps=160, meta_batch_size=10)
    ### END SOLUTION


# %%
result = project.run(quadratic_tasks, hyperparameters)

# %% tests id=test_project points=5
assert project.check_meta_trained(result)
### BEGIN HIDDEN TESTS
def _hidden_project():
    from mamlkit import params as P

    g = torch.Generator().manual_seed(31337)  # the hidden test quadratics, drawn here
    info = 2 * torch.rand(200, 3, generator=g, dtype=torch.float64) - 1
    x = 4 * torch.rand(200, 5 + 50, 1, generator=g, dtype=torch.float64) - 2
    y = info[:, 0, None, None] * x**2 + info[:, 1, None, None] * x + info[:, 2, None, None]
    test = tasks.Task(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:]).to(dtype=torch.float32)
    hyper = project.validate_hyperparameters(hyperparameters())
    assert hyper == result.hyper, "run the cells in order: the model was trained with other hyperparameters"
    lr, steps = hyper["inner_lr"], hyper["inner_steps"]
    mse = project.adapted_mse(result.model, result.params, test, lr, steps)
    assert mse < project.TARGET_MSE, f"MSE on the hidden test quadratics {mse:.3f} is not below the target"
    torch.manual_seed(0)
    untrained = P.get_params(models.MLP((1, 40, 40, 1), init="torch"))
    baseline = project.adapted_mse(result.model, untrained, test, lr, steps)
    assert mse < project.BASELINE_RATIO * baseline, f"MSE {mse:.3f} is not below 3/4 of {baseline:.3f}"


_hidden_project()
### END HIDDEN TESTS

# %% [markdown]
# ## Before you submit
#
# *Kernel → Restart Kernel and Run All Cells*, check every test cell prints ✔, save, and hand in this
# notebook (`nbgrader` users: *Assignments → Submit*). Optional: plot a few adapted curves with
# `mamlkit.course.plots` to see what your model learned.
