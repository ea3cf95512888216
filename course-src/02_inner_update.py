# %% [markdown]
# # 02 · The inner update: adapting to one task
#
# **In this notebook you will**
# - hold a network's parameters as a dictionary $\theta$ and run the network with any such dictionary;
# - write the **inner update** (the task-specific step of TAG) by hand and check it against
#   `mamlkit.maml.inner_update` and against `torch.optim.SGD`;
# - take several inner steps, and see what a too large step size $\alpha$ does;
# - move $\alpha$, the number of steps and $K$ with sliders.
#
# **Prerequisites:** notebook 01 (tasks, support and query sets).

# %%
import torch
import torch.nn.functional as F

from mamlkit import maml, models, params, tasks
from mamlkit.course import checks, plots, widgets
from mamlkit.course.notebook import setup_notebook

device = setup_notebook(seed=0)

# %% [markdown]
# ## 1. Parameters as a dictionary
#
# MAML needs the loss at *other* parameters than the ones stored in the model: the adapted
# $\theta'$. So `mamlkit` keeps the architecture (`nn.Module`) apart from the parameters, a plain
# `dict[str, Tensor]`, and `params.forward(model, θ, x)` runs the model with any dict
# (`torch.func.functional_call` underneath). The model is the paper's MLP 1-40-40-1.

# %%
model = models.MLP(init="torch")  # PyTorch's default random initialization
theta = params.get_params(model)
{name: tuple(p.shape) for name, p in theta.items()}

# %% [markdown]
# One 5-shot sine task; `x, y` is its support set. The network maps a `(K, 1)` batch of inputs to `(K, 1)` outputs.

# %%
task = tasks.sample_sine_tasks(1, shots=5, queries=100, generator=torch.Generator().manual_seed(2))[0]
x, y = task.x_support, task.y_support
print("prediction shape:", tuple(params.forward(model, theta, x).shape), "| amplitude, phase:", task.info.tolist())

# %% [markdown]
# ## 2. One inner step, by hand
#
# On the support set of task $\mathcal{T}_i$, one gradient step from $\theta$:
#
# $$\theta'_i = \theta - \alpha \nabla_\theta \mathcal{L}(\theta, \mathcal{T}_i),
# \qquad \mathcal{L}(\theta, \mathcal{T}_i) = \frac{1}{K}\sum_{(x, y) \in \mathcal{D}^{\text{support}}_i}
# \big(f_\theta(x) - y\big)^2 .$$
#
# Three lines: the loss $\mathcal{L}$, its gradient $\nabla_\theta \mathcal{L}$, the step with $\alpha$ (`inner_lr`).
# *In the inner round, updates abound: quick adaptation is what we've found.*

# %%
inner_lr = 0.01                                                   # α
loss = F.mse_loss(params.forward(model, theta, x), y)              # L(θ, T_i) on the support set
grads = torch.autograd.grad(loss, list(theta.values()))            # ∇_θ L
adapted = {name: p - inner_lr * g for (name, p), g in zip(theta.items(), grads)}   # θ' = θ − α ∇L

# %% [markdown]
# **Check 1: the library.** `maml.inner_update` computes the same $\theta'$ (and keeps the graph of
# the gradient, which notebook 03 needs).

# %%
library = maml.inner_update(model, theta, x, y, F.mse_loss, inner_lr)
for name in theta:
    torch.testing.assert_close(adapted[name], library[name])
print("hand-written step == maml.inner_update ✔")

# %% [markdown]
# **Check 2: an oracle.** One step of plain `torch.optim.SGD` on a copy of the parameters lands in
# the same place: the inner update *is* SGD, on one task's support set.

# %%
copy = params.detach(theta, requires_grad=True)
sgd = torch.optim.SGD(copy.values(), lr=inner_lr)
F.mse_loss(params.forward(model, copy, x), y).backward()
sgd.step()
for name in theta:
    torch.testing.assert_close(copy[name], library[name].detach())
print("maml.inner_update == torch.optim.SGD.step() ✔")

# %% [markdown]
# The support loss went down, as one gradient step should (for a small enough $\alpha$):

# %%
before = F.mse_loss(params.forward(model, theta, x), y).item()
after = F.mse_loss(params.forward(model, library, x), y).item()
print(f"support loss: {before:.3f} → {after:.3f}")
assert after < before

# %% [markdown]
# ## 3. Several inner steps
#
# `maml.adapt` repeats the inner update $k$ times (`inner_steps`) on the same support set:
# $\theta^{(j+1)} = \theta^{(j)} - \alpha \nabla \mathcal{L}(\theta^{(j)}, \mathcal{T}_i)$, $\theta^{(0)} = \theta$.
# We follow the support loss and the query loss.

# %%
widgets.quiz("Predict before you run the next cell: from a random θ, 100 inner steps on the 5 support points. "
             "After them, the query loss (100 other points of the same task) is…",
             right=("still large, several times the support loss",
                    "The next cell prints both losses every 10 steps and asserts it: 5 points are easy to fit, but "
                    "they say little about the rest of the wave."),
             wrong={"nearly 0, like the support loss": "the steps fit the 5 support points only; between and beyond "
                    "them the random network can do anything, and the query points measure exactly that.",
                    "equal to the support loss: both sets come from the same sine wave": "same wave, other points: "
                    "the support loss is measured where the steps fitted, the query loss where they never looked."})

# %%
steps = list(range(0, 101, 10))
support_loss, query_loss = [], []
for k in steps:
    a = maml.adapt(model, theta, x, y, F.mse_loss, 0.02, k, first_order=True) if k else theta
    support_loss.append(F.mse_loss(params.forward(model, a, x), y).item())
    query_loss.append(F.mse_loss(params.forward(model, a, task.x_query), task.y_query).item())
print("support:", [round(v, 2) for v in support_loss])
print("query:  ", [round(v, 2) for v in query_loss])
assert support_loss[-1] < 0.5 * support_loss[0] and query_loss[-1] > 5 * support_loss[-1]

# %% [markdown]
# From a *random* starting point, 5 points are easy to fit but say little about the rest of the curve:
# after 100 steps the support loss is small, the query loss still large (the assertion above).
# The same numbers as a picture (the course's `plot_*` functions all take `ax=None` and return the Axes).

# %%
ax = plots.plot_cost(steps, {"support": support_loss, "query": query_loss}, "MSE (from a random θ)")
ax.set(title="α = 0.02, K = 5");

# %% [markdown]
# ## 4. Too large a step size
#
# Gradient descent only decreases the loss for a small enough $\alpha$. Past a threshold (set by
# the curvature of the loss) each step overshoots and the parameters blow up. Here, 10 steps for
# several $\alpha$:

# %%
for a in [0.001, 0.01, 0.1, 0.3, 1.0]:
    adapted_a = maml.adapt(model, theta, x, y, F.mse_loss, a, 10, first_order=True)
    print(f"α = {a:<6} support loss after 10 steps: {F.mse_loss(params.forward(model, adapted_a, x), y).item():.4g}")

# %% [markdown]
# What does a too large $\alpha$ look like? Take only $K = 2$ support points and 50 steps. With a small
# $\alpha$ the curve passes through both points (support loss near 0) and is unconstrained elsewhere. With a
# large one the steps overshoot until the ReLUs stop firing: the network collapses to a **flat line** at
# the mean of the two $y$ values (its support loss is then their variance, and the gradient can no longer
# move it). Larger still, it diverges to `nan`.

# %%
x2, y2, grid = x[:2], y[:2], tasks.sine_grid(100)
two_points = {}
for a in [0.02, 0.3, 1.0]:
    adapted_a = maml.adapt(model, theta, x2, y2, F.mse_loss, a, 50, first_order=True)
    curve = params.forward(model, adapted_a, grid)
    two_points[a] = (F.mse_loss(params.forward(model, adapted_a, x2), y2).item(), curve.std().item())
    print(f"K = 2, α = {a:<4} 50 steps: support loss {two_points[a][0]:.4g}, spread of the curve (std) {two_points[a][1]:.4g}")
assert two_points[0.02][0] < 1e-3, "small α: through both points"
assert two_points[0.3][1] < 0.01 and abs(two_points[0.3][0] - y2.var(unbiased=False).item()) < 1e-2, "flat at the mean"
assert not torch.isfinite(torch.tensor(two_points[1.0])).all(), "α = 1: divergence"

# %% [markdown]
# And a step size of zero or below is rejected with a clear message, not a silent no-op:

# %%
try:
    maml.inner_update(model, theta, x, y, F.mse_loss, inner_lr=0)
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# ## 5. The picture: after 0, 1 and 10 steps
#
# `plots.plot_adaptation` draws the curve after 0, 1 and 10 inner steps. From a random $\theta$ the
# adaptation is slow: ten steps of $\alpha = 0.01$ only bend the curve toward the nearest support
# points, far from the sine wave. Meta-learning (notebook 04)
# will find a $\theta$ from which the *same* ten steps fit the task.

# %%
plots.plot_adaptation(model, theta, task, inner_lr=0.01, steps=(0, 1, 10), name="random init");

# %% [markdown]
# ## 6. Explore: α, steps and K
#
# Adapt the random network to a task of your choice. Try $K = 2$ with many steps: with a small $\alpha$
# the curve passes through the two points and says little about the rest of the wave; raise $\alpha$ and
# it collapses to a flat line (section 4); $\alpha = 1$ diverges.

# %%
explorer = widgets.adaptation_explorer({"random init": model}, inner_lr=0.05, steps=10, max_steps=50)
explorer

# %% [markdown]
# ## Summary
#
# - Parameters travel as a dict $\theta$; `params.forward(model, θ, x)` runs the network with any of them.
# - Inner update (task-specific): $\theta' = \theta - \alpha \nabla_\theta \mathcal{L}(\theta, \mathcal{T}_i)$,
#   one SGD step on the support set: `maml.inner_update`; $k$ steps: `maml.adapt`.
# - Too large $\alpha$ diverges; few support points are easy to fit but say little about the task.
# - From a random start, a few steps do not solve a task: we need a better $\theta$.

# %% [markdown]
# ## Check yourself

# %%
widgets.quiz("Which data does the inner update use to compute its gradient?",
             right=("the support set of the task", "The inner loop is task-specific: it only sees the K support points."),
             wrong={"the query set of the task": "the query set is kept back to measure the adapted θ′ (and, in "
                                                 "notebook 03, for the outer update).",
                    "all tasks of the meta-batch": "a step on all tasks pooled is joint training; the inner update "
                                                   "adapts to one task at a time."})

# %%
widgets.quiz("What happens with a step size α that is too large?",
             right=("the loss overshoots and can diverge to NaN",
                    "Each step overshoots the minimum; the loss grows instead of shrinking (section 4)."),
             wrong={"adaptation is slower but safe": "that is what a too *small* α does; a too large one jumps past "
                                                     "the minimum, further at every step.",
                    "nothing, α only matters in the outer loop": "α is the *inner* step size: section 4 shows what "
                                                                 "a large α does to the support loss."})

# %%
widgets.quiz("Why does mamlkit pass parameters as a dict instead of editing model.parameters()?",
             right=("so the loss can be evaluated at the adapted θ′ while θ stays intact",
                    "The outer loop needs both θ and θ′ (and the graph between them)."),
             wrong={"to save memory": "a dict holds the same tensors the model would; the point is running the "
                                      "model at parameters it does not store.",
                    "because nn.Module cannot hold parameters": "it can (model.parameters()), but that is one set; "
                                                                "MAML needs θ and θ′ at the same time."})

# %% [markdown]
# ## Exercises
#
# **Exercise 2.1 — write the inner update.** Return a *new* dict
# $\theta' = \theta - \alpha \nabla_\theta \mathcal{L}(\theta)$ computed on `(x, y)`. Keep the graph
# (`create_graph=True`): notebook 03 differentiates through your step.

# %%
def inner_update(model, theta, x, y, loss_fn, inner_lr):
    raise NotImplementedError


checks.check_inner_update(inner_update);

# %% [markdown]
# **Exercise 2.2 — several steps.** Use your `inner_update` (or the library's) `inner_steps` times.

# %%
def adapt(model, theta, x, y, loss_fn, inner_lr, inner_steps):
    raise NotImplementedError


checks.check_adapt(adapt);

# %% [markdown]
# **Exercise 2.3 — open-ended, no check: sweep $K$, $\alpha$ and the steps.** Thinking is the point here, so
# there is no checker. With the explorer of section 6, or a loop over `maml.adapt` as in sections 3 and 4,
# change one setting at a time, and write down what you expect *before* each run:
#
# 1. $K$ = 2, 5, 10, 20 support points, $\alpha = 0.02$, 50 steps: how do the support and the query loss move?
# 2. At $K = 5$: the largest $\alpha$ for which 10 steps still lower the support loss. Is it the same for another
#    task, or for $K = 20$?
# 3. Many small steps or a few large ones, for the same $\alpha \times$ steps: which gets lower on the query set?
#
# <details><summary>What to look for</summary>
#
# 1. More support points pin the curve down in more places, so the query loss should follow the support
#    loss more closely; from a *random* $\theta$ it still does not become a sine wave.
# 2. The threshold is set by the curvature: on a quadratic, gradient descent is stable for
#    $\alpha < 2/\lambda_{\max}$, $\lambda_{\max}$ the largest eigenvalue of the support loss's Hessian. That
#    curvature depends on the task's points, so the threshold moves with the task and with $K$.
# 3. A few large steps can overshoot where many small ones follow the slope; compare the two at equal
#    $\alpha \times$ steps. Notebook 04 asks the same questions from a *meta-learned* start.
# </details>
