# %% [markdown]
# # 01 · Tasks: support sets, query sets and a distribution of tasks
#
# **In this notebook you will**
# - meet the sine-wave tasks of the MAML paper and the distribution $p(\mathcal{T})$ they come from;
# - split a task into a **support set** (to adapt on) and a **query set** (to measure on);
# - see, with numbers, why one fixed model cannot fit all these tasks, which is why we want a model
#   that *adapts*;
# - sample tasks yourself with sliders.
#
# **Prerequisites:** notebook 00 (the notation table).

# %%
import math

import torch

from mamlkit import tasks
from mamlkit.course import checks, plots, widgets
from mamlkit.course.notebook import setup_notebook

device = setup_notebook(seed=0)

# %% [markdown]
# ## 1. One task is one sine wave
#
# Each task $\mathcal{T}_i$ is a regression problem: predict
#
# $$y = A_i \sin(x - \varphi_i), \qquad x \in [-5, 5],$$
#
# with its own amplitude $A_i$ and phase $\varphi_i$. `tasks.sine` computes exactly this formula.

# %%
x = tasks.sine_grid(5)
tasks.sine(x, amplitude=2.0, phase=math.pi / 2)[:, 0]

# %% [markdown]
# ## 2. A distribution of tasks $p(\mathcal{T})$
#
# The paper draws $A \sim U[0.1, 5]$ and $\varphi \sim U[0, \pi]$. A meta-learner never sees one
# task many times: it sees *many tasks*, a few points each. `tasks.sample_sine_tasks` draws a batch
# of tasks from a seeded generator (same seed, same tasks, on any machine).

# %%
generator = torch.Generator().manual_seed(0)
batch = tasks.sample_sine_tasks(5, shots=10, queries=10, generator=generator)
print("tasks:", len(batch), "| x_support", tuple(batch.x_support.shape), "| x_query", tuple(batch.x_query.shape))
print("amplitude, phase of task 0:", batch.info[0].tolist())

# %% [markdown]
# Tensors carry a leading task dimension: `(tasks, K, 1)`. `batch[i]` is one task, and
# `for task in batch` loops over them.

# %%
plots.plot_tasks(batch);

# %% [markdown]
# ## 3. Support set and query set
#
# Every task comes with two small datasets:
#
# - the **support set** $\mathcal{D}^{\text{support}}_i$, $K$ points the model may adapt on
#   ($K$-shot; the paper uses $K = 5$ or $10$);
# - the **query set** $\mathcal{D}^{\text{query}}_i$, fresh points of the same task on which we
#   measure the adapted model.
#
# The inner loop only ever sees the support set; the outer loop, and every evaluation, is judged on
# the query set. Like tasting a dish (query) after cooking with the ingredients you were given
# (support). For classification the same idea is called *N-way K-shot*: N classes, K examples each.

# %%
task = batch[0]
overlap = set(task.x_support[:, 0].tolist()) & set(task.x_query[:, 0].tolist())
assert not overlap, "support and query points must be different draws"
print(f"support: {len(task.x_support)} points, query: {len(task.x_query)} points, shared: {len(overlap)}")

# %% [markdown]
# ## 4. Why one model cannot fit every task
#
# Suppose we trained a single model on all tasks pooled together and never adapted it. Under the
# squared error the best it can do is predict, at each $x$, the **average** $y$ over tasks,
# $\mathbb{E}_{\mathcal{T}}[A \sin(x - \varphi)]$. We estimate that curve from 2000 tasks and
# measure its error on new tasks.

# %%
grid = tasks.sine_grid(100)
many = tasks.sample_sine_tasks(2000, generator=torch.Generator().manual_seed(1))
curves = tasks.sine(grid[None, :, 0], many.info[:, :1], many.info[:, 1:])  # (tasks, 100)
best_single = curves.mean(0)
mse_single = ((curves - best_single) ** 2).mean().item()
mse_zero = (curves**2).mean().item()
print(f"MSE of the best single curve: {mse_single:.2f}  (predicting 0 everywhere: {mse_zero:.2f})")
assert mse_single > 2.0 and mse_single < mse_zero

# %% [markdown]
# The single best curve barely beats predicting zero: the tasks disagree, so their average is a
# flat compromise. The figure shows it (grey) among a few tasks. A model that *adapts* from the
# $K$ support points can do much better: that is what the rest of the course builds.

# %%
ax = plots.plot_tasks(batch)
ax.plot(grid[:, 0], best_single, color=plots.color("pretrain"), lw=3, label="best single curve")
ax.legend(fontsize="x-small", loc="lower left");

# %% [markdown]
# ## 5. A fixed test set
#
# To compare methods honestly we always measure on the *same* 600 test tasks ($K = 5$ support
# points, 100 query points each), drawn from a fixed seed that training never uses.

# %%
test_a, test_b = tasks.sine_test_tasks(600), tasks.sine_test_tasks(600)
assert torch.equal(test_a.x_support, test_b.x_support)
print("test tasks:", len(test_a), "| support", tuple(test_a.x_support.shape), "| query", tuple(test_a.x_query.shape))

# %% [markdown]
# ## 6. Explore: sample a task
#
# Move amplitude $A$, phase $\varphi$ and $K$. Triangles are the support set, circles the query set.
# With $K = 1$ or $2$, how many sine waves pass through the support points?

# %%
explorer = widgets.task_explorer()
explorer

# %% [markdown]
# ## Summary
#
# - A task $\mathcal{T}_i$ is a small regression problem $y = A_i \sin(x - \varphi_i)$; tasks come
#   from a distribution $p(\mathcal{T})$.
# - Each task has a support set ($K$ points, used to adapt) and a query set (used to measure).
# - One model without adaptation can only predict the average curve, which is poor for every task.
# - Evaluation uses a fixed set of 600 test tasks.

# %% [markdown]
# ## Check yourself

# %%
widgets.quiz("On which data does the inner loop adapt the model?",
             ["the query set", "the support set", "all 600 test tasks"], "the support set",
             "The support set is for adapting; the query set measures the adapted model.")

# %%
widgets.quiz("In a 5-shot sine task, what is 5?",
             ["the number of tasks", "the number of inner steps", "the number of support points K"], 2,
             "K-shot: K labelled examples per task (per class in classification).")

# %%
widgets.quiz("Why can't a single fixed curve fit all sine tasks well?",
             ["the network is too small", "the tasks disagree: their average is a flat compromise",
              "sine waves cannot be learned by an MLP"], 1,
             "Any one curve is a compromise between tasks; only adaptation can pick the right wave.")

# %% [markdown]
# ## Exercises
#
# **Exercise 1.1 — the task function.** Write `sine(x, amplitude, phase)` returning
# $A \sin(x - \varphi)$ (work with tensors), then run the check.

# %%
def sine(x, amplitude, phase):
    raise NotImplementedError


checks.check_sine(sine)
