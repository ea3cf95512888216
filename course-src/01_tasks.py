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
widgets.quiz("Predict before you run the next cell: the best single curve (the average over all tasks) against "
             "predicting 0 everywhere. Its MSE is…",
             right=("lower than zero's, yet still large",
                    "The next cell prints both (and asserts it): the phases φ ∈ [0, π] do not cancel, so the average "
                    "is a real wave that beats zero, but one curve cannot follow each task's amplitude and phase."),
             wrong={"the same as zero's: the tasks cancel out to a flat line": "they would cancel if φ covered a "
                    "whole period; with φ ∈ [0, π] the average is a wave (derived below), and the next cell shows "
                    "it beats zero.",
                    "close to 0: the average fits the tasks well": "the tasks differ in amplitude and phase, so at "
                    "each x they want different outputs: one curve keeps a large error, as the next cell prints."})

# %%
grid = tasks.sine_grid(100)
many = tasks.sample_sine_tasks(2000, generator=torch.Generator().manual_seed(1))
curves = tasks.sine(grid[None, :, 0], many.info[:, :1], many.info[:, 1:])  # (tasks, 100)
best_single = curves.mean(0)
mse_single = ((curves - best_single) ** 2).mean().item()
mse_zero = (curves**2).mean().item()
print(f"MSE of the best single curve: {mse_single:.2f}  (predicting 0 everywhere: {mse_zero:.2f}, "
      f"{1 - mse_single / mse_zero:.0%} lower)")
assert mse_single > 2.0 and mse_single < mse_zero

# %% [markdown]
# The average is not flat. With $\varphi \sim U[0, \pi]$ the phases do not cancel:
# $\mathbb{E}[\sin(x - \varphi)] = \frac1\pi\int_0^\pi \sin(x - \varphi)\,d\varphi = -\frac2\pi \cos x$, and the
# amplitude is independent of the phase, so the best single curve is
#
# $$\mathbb{E}_{\mathcal{T}}[A \sin(x - \varphi)] = -\frac{2}{\pi}\,\mathbb{E}[A] \cos x = -\frac{2}{\pi}\cdot 2.55 \cos x \approx -1.62 \cos x.$$
#
# Checked against the curve estimated from the 2000 tasks, and its gain over predicting zero:

# %%
formula = -(2 / math.pi) * (0.1 + 5) / 2 * torch.cos(grid[:, 0])
print(f"best single curve = {-(2 / math.pi) * 2.55:.2f} cos x: largest gap to the estimate "
      f"{(best_single - formula).abs().max():.2f}")
print(f"its MSE is {1 - mse_single / mse_zero:.0%} lower than predicting zero, yet still {mse_single:.2f}")
assert (best_single - formula).abs().max() < 0.2, "the task average should be −(2/π) E[A] cos x"
assert 0.2 < 1 - mse_single / mse_zero < 0.4, "the average beats zero by about 30%"

# %% [markdown]
# So the best single curve is a real sine-like wave (grey in the figure, among a few tasks) and beats
# predicting zero by the margin printed above, but its error stays large: each task has its own
# amplitude and phase, and one curve cannot follow them all. A model that *adapts* from the $K$ support
# points can do much better: that is what the rest of the course builds.

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
# - One model without adaptation can only predict the average curve, $-\frac2\pi\mathbb{E}[A]\cos x$: better
#   than zero, still far from most tasks.
# - Evaluation uses a fixed set of 600 test tasks.

# %% [markdown]
# ## Check yourself

# %%
widgets.quiz("On which data does the inner loop adapt the model?",
             right=("the support set", "The support set is for adapting; the query set measures the adapted model."),
             wrong={"the query set": "the query set is held back to measure the adapted model: adapting on it would "
                                     "grade the model on the answers it was shown.",
                    "all 600 test tasks": "the inner loop is task-specific: it sees the K support points of one "
                                          "task; the 600 test tasks are for evaluation."})

# %%
widgets.quiz("In a 5-shot sine task, what is 5?",
             right=("the number of support points K",
                    "K-shot: K labelled examples per task (per class in classification)."),
             wrong={"the number of tasks": "the number of tasks per outer step is the meta-batch size n, a "
                                           "separate setting.",
                    "the number of inner steps": "the inner steps k say how often we step on the support set, "
                                                 "not how many points it holds."})

# %%
widgets.quiz("Why can't a single fixed curve fit all sine tasks well?",
             right=("the tasks disagree: their average, about −1.62 cos x, is one compromise wave far from most tasks",
                    "The average beats predicting zero, but any one curve is a compromise between tasks; only "
                    "adaptation can pick the right wave."),
             wrong={"the network is too small": "size is not the problem: even the best possible fixed curve, the "
                                                "task average of section 4, keeps a large error, because the tasks "
                                                "want different outputs at the same x.",
                    "sine waves cannot be learned by an MLP": "an MLP fits one sine wave well (notebook 04 adapts "
                                                              "one to a task); the trouble is one fixed curve for "
                                                              "all tasks at once."})

# %% [markdown]
# ## Exercises
#
# **Exercise 1.1 — the task function.** Write `sine(x, amplitude, phase)` returning
# $A \sin(x - \varphi)$ (work with tensors), then run the check.

# %%
def sine(x, amplitude, phase):
    raise NotImplementedError


checks.check_sine(sine);
