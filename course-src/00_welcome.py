# %% [markdown]
# # 00 · Welcome: learning to adapt quickly
#
# **In this notebook you will**
# - check that your environment works (versions, CPU or GPU, interactive widgets);
# - see what *optimization-based meta-learning* is and the map of the course;
# - learn the notation table that every later notebook uses, symbol by symbol, with its name in code.
#
# **Prerequisites:** Python, a little PyTorch (tensors, `autograd`), and gradient descent
# $\theta \leftarrow \theta - \eta \nabla_\theta \mathcal{L}(\theta)$.

# %%
import inspect

import ipywidgets

from mamlkit import maml, reptile
from mamlkit.course import checks, widgets
from mamlkit.course.notebook import FAST, present, setup_notebook

device = setup_notebook(seed=0)

# %% [markdown]
# ## 1. Environment check
#
# The line above lists the versions and the device. The course runs on a laptop CPU; when a GPU is
# present, `device` is `cuda` and the live training run of notebook 04 uses it. With the
# environment variable `MAMLKIT_FAST=1` (set in CI) every notebook takes shortcuts: fewer test
# tasks, shorter live runs.

# %%
print("fast mode (MAMLKIT_FAST=1):", FAST)
print("device:", device)
assert int(ipywidgets.__version__.split(".")[0]) >= 8, "the course needs ipywidgets 8: pip install -U ipywidgets"

# %% [markdown]
# **Are the widgets alive?** Click the button. If nothing happens, the JupyterLab front end
# cannot talk to the kernel: install `ipywidgets>=8` in the environment JupyterLab runs from and
# reload the page. (Static renderings show no widgets: run the notebook.)

# %%
button = ipywidgets.Button(description="Click me", button_style="info")
status = ipywidgets.Label("not clicked yet")
button.on_click(lambda _: setattr(status, "value", "✔ widgets work: the kernel answered your click"))
ipywidgets.HBox([button, status])

# %% [markdown]
# **Teaching with the course?** Every notebook is also a slideshow: each `#`/`##` heading starts a
# slide. With `jupyterlab-rise` (installed with the course) press `Alt+R` to present it live, cells
# still running; `make slides` exports static reveal.js slides. `present()` switches to *lecture mode*:
# large figures, fonts and sliders for a projector (call it before the figures you show);
# `present(False)` switches back.

# %%
lecture = False  # instructors: True for a projector
present(lecture)

# %% [markdown]
# ## 2. What is optimization-based meta-learning?
#
# An ordinary learner trains one model for one task from many examples. A **meta-learner** sees
# many related tasks and *learns how to learn* them, so that a new task needs only a handful of
# examples. **Optimization-based** meta-learning does it by changing the *optimization* itself:
# it learns a starting point $\theta$ from which a few gradient steps on a new task already give a
# good model.
#
# > **The chef.** A seasoned chef does not invent a dish from scratch for every basket of
# > ingredients: she adapts a familiar recipe in a few moves. The meta-learned $\theta$ is the
# > familiar recipe; the few gradient steps are the adaptation to today's ingredients.
#
# > **The athlete.** Someone trained in several sports picks up a new one quickly, reusing what all
# > sports share. Meta-training across many tasks builds exactly that shared starting point.
#
# Three algorithms make this concrete, and this course implements, tests and compares all three:
# **MAML** (Model-Agnostic Meta-Learning, Finn et al. 2017), **First-Order MAML** (FOMAML) and
# **Reptile** (Nichol et al. 2018). *Model-agnostic* means the algorithm never looks inside the
# model: any network trained by gradient descent works (the course uses an MLP on sine waves and,
# in notebook 08, a CNN on handwritten characters). A mnemonic some use: **AGAIN**, Agnostic,
# Generalizable, Adaptable, Immediate, Novel.

# %% [markdown]
# ## 3. Two loops: TAG
#
# MAML runs two nested loops. Remember them with **TAG**: **T**ask-specific inner loop,
# **G**eneral-performance outer loop.
#
# - **Inner loop (task-specific):** for one task $\mathcal{T}_i$, take gradient steps on its small
#   *support set*: $\theta'_i = \theta - \alpha \nabla_\theta \mathcal{L}(\theta, \mathcal{T}_i)$.
# - **Outer loop (general performance):** measure every adapted $\theta'_i$ on the task's *query
#   set* and improve the starting point:
#   $\theta \leftarrow \theta - \beta \nabla_\theta \sum_i \mathcal{L}(\theta'_i, \mathcal{T}_i)$.
#
# Both formulas are one function each in `mamlkit`; the cell after the question prints their signatures.

# %%
widgets.quiz("Predict before you run the next cell: the inner update adapts to one task from its support points "
             "(x, y). What data does the outer loss, `maml.maml_loss`, take?",
             right=("a batch of tasks, each with a support set and a query set",
                    "The next cell prints `maml_loss(model, params, tasks, ...)`: it adapts on each task's support "
                    "set and scores the adapted parameters on that task's query set, averaged over the tasks."),
             wrong={"one task's support points (x, y), like the inner update": "those are the inner update's data "
                    "(the next cell shows its x and y); the outer loop is about general performance, so it takes "
                    "many tasks and scores on points the inner step did not see.",
                    "only query points (x, y)": "it must adapt first, which needs each task's support set: the next "
                    "cell shows a `tasks` argument, not x and y."})

# %%
assert "tasks" in inspect.signature(maml.maml_loss).parameters  # what the question above predicts
print("inner update:", "maml.inner_update" + str(inspect.signature(maml.inner_update)))
print("outer loss:  ", "maml.maml_loss" + str(inspect.signature(maml.maml_loss)))
print("Reptile:     ", "reptile.reptile_step" + str(inspect.signature(reptile.reptile_step)))

# %% [markdown]
# ## 4. Notation table
#
# Every notebook uses these symbols in its formulas and these names in its code.
#
# | symbol | meaning | name in code |
# |---|---|---|
# | $p(\mathcal{T})$ | the distribution of tasks | `tasks.sample_sine_tasks` |
# | $\mathcal{T}_i$ | one task: a support set and a query set | `Task` (`task.x_support`, `task.y_support`, `task.x_query`, `task.y_query`) |
# | $K$ | support examples per task (K-shot; N-way for N classes) | `shots` |
# | $\theta$ | meta-parameters, the learned starting point | `theta` (a `dict[str, Tensor]`; the module `params` handles such dicts) |
# | $\theta'_i$ (Reptile: $\phi_i$) | parameters adapted to task $i$ | `adapted` |
# | $\mathcal{L}(\theta, \mathcal{T}_i)$ | loss of the model with $\theta$ on task $i$ (MSE for sine waves) | `loss_fn` |
# | $\alpha$ | inner step size | `inner_lr` |
# | $k$ | number of inner steps | `inner_steps` |
# | $\beta$ | outer (meta) step size of MAML / FOMAML | `outer_lr` |
# | $\varepsilon$ | outer step size of Reptile | `outer_lr` |
# | $n$ | tasks per outer step (meta-batch) | `meta_batch_size` |
#
# One word per concept: *support/query* inside a task (never train/test), *inner/outer* for the
# loops, *task* and *meta-batch*.

# %% [markdown]
# ## 5. Glossary
#
# - **Model-Agnostic Meta-Learning (MAML):** learns an initialization of the parameters from which
#   a few gradient steps solve a new task well.
# - **Inner loop:** the model updates its parameters on a small task-specific dataset (the support set).
# - **Outer loop:** the performance of the updated parameters (on the query set) refines the
#   initialization.
# - **First-Order MAML:** MAML without the second derivatives in the outer update; cheaper.
# - **Reptile:** adapts with several steps, then moves the initialization toward the adapted
#   parameters; needs no second derivatives either.

# %% [markdown]
# ## 6. Course map
#
# | notebook | idea | you will move |
# |---|---|---|
# | 01_tasks | task distributions, support vs query; why one model cannot fit all sine waves | amplitude, phase, K |
# | 02_inner_update | the task-specific inner step on a parameter dict; several steps; too large α | α, steps, K |
# | 03_outer_update | the gradient through the inner step: the Hessian term by hand, autograd, finite differences | w, α |
# | 04_maml | meta-training on sine waves; the paper's figure; honest evaluation | steps, K |
# | 05_first_order_maml | drop the second-order term: gradient agreement, time, memory | α, steps |
# | 06_reptile | the interpolation update; k = 1 is joint training | ε, k, α |
# | 07_compare | MAML, FOMAML, Reptile and the baseline side by side | algorithm, α, steps, K |
# | 08_characters | the same algorithms on handwritten characters with a CNN | alphabet |

# %% [markdown]
# ## Summary
#
# - Optimization-based meta-learning changes the *optimization* so a model adapts from a few examples.
# - MAML learns a starting point $\theta$; adapting to a task is a few steps of gradient descent from it.
# - TAG: the inner loop is **T**ask-specific (support set), the outer loop is for **G**eneral performance (query set).
# - FOMAML and Reptile are cheaper variations; all three are model-agnostic.

# %% [markdown]
# ## Check yourself

# %%
widgets.quiz("In MAML, which loop adapts the parameters to one task?",
             right=("the inner loop", "TAG: the inner loop is task-specific, a few steps on one task's support "
                    "set; the outer loop improves the starting point for all tasks."),
             wrong={"the outer loop": "the outer loop works across tasks: it moves the shared starting point θ so "
                                      "that adapting works well on every task (the G of TAG).",
                    "both loops equally": "they have different jobs: only the inner loop fits one task; the outer "
                                          "loop never adapts to a single task, it improves θ for all of them."})

# %%
widgets.quiz("What does 'model-agnostic' mean?",
             right=("it works with any model trained by gradient descent",
                    "MAML only needs gradients of a loss: MLPs, CNNs, anything differentiable."),
             wrong={"it only works for MLPs": "the course runs the same MAML code on an MLP (sine waves) and a CNN "
                                              "(characters, notebook 08): nothing in it depends on the architecture.",
                    "it needs no model at all": "there is always a model: 'agnostic' means MAML does not look inside "
                                                "it, it only asks for the gradient of its loss."})

# %%
widgets.quiz("In the chef analogy, what plays the role of the familiar recipe?",
             right=("the meta-learned initialization θ",
                    "The recipe is the starting point θ; today's ingredients are the support set of a new task."),
             wrong={"the query set": "the query set is the tasting after cooking: it judges the adapted dish, it "
                                     "is not where the chef starts from.",
                    "the inner step size α": "α is how boldly the chef changes the recipe in one move, not the "
                                             "recipe itself."})

# %% [markdown]
# ## Exercises
#
# Every notebook ends with exercises: a function to fill in, then a `checks.check_*` call that prints
# one line, ✔ or ✘ with a hint, and returns `True` or `False` (so an instructor can grade a
# submission by running it; the `;` that ends each check cell keeps Jupyter from also printing that
# `True` or `False` under the line). Until you fill it in, the check says "not implemented yet".
#
# **Exercise 0.1 — the notation.** Replace each `"?"` with the name the symbol has in `mamlkit`
# code (see the table in section 4), then run the cell.

# %%
notation = {"θ": "?", "θ′": "?", "α": "?", "β": "?", "ε": "?", "K": "?"}
checks.check_notation(notation);
