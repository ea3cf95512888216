# %% [markdown]
# # 06 · Reptile: move toward the adapted parameters
#
# **In this notebook you will**
# - write the Reptile update $\theta \leftarrow \theta + \varepsilon(\bar\phi - \theta)$ and check it
#   against `reptile.reptile_step`;
# - show numerically that with $k = 1$ inner step Reptile *is* joint training (no meta-learning),
#   and that with $k > 1$ it is not;
# - relate Reptile to MAML and FOMAML through their expected updates;
# - watch one Reptile step in the 2-D parameter plane of a linear model.
#
# **Prerequisites:** notebooks 02 (inner update) and 05 (First-Order MAML).

# %%
import time

import torch
import torch.nn.functional as F

from mamlkit import checkpoint, inner, maml, models, params, reptile, tasks
from mamlkit.config import Config
from mamlkit.course import checks, widgets
from mamlkit.course.notebook import setup_notebook

device = setup_notebook(seed=0)

# %% [markdown]
# ## 1. The update
#
# **Reptile** (Nichol, Achiam & Schulman 2018) needs no query set and no gradient through the inner
# loop. For each task of the meta-batch, run $k$ SGD steps on its data from $\theta$ and call the
# result $\phi_i$ (the adapted $\theta'_i$; $\phi_i^{(0)} = \theta$, $\phi_i^{(j)}$ after $j$ steps); then move the
# initialization a fraction $\varepsilon$ of the way toward their mean:
#
# $$\phi_i = \theta - \alpha \sum_{j=0}^{k-1} \nabla \mathcal{L}(\phi_i^{(j)}, \mathcal{T}_i), \qquad
# \theta \leftarrow \theta + \varepsilon \Big(\frac{1}{n}\sum_i \phi_i - \theta\Big).$$
#
# Like the athlete who, after a little practice in each sport, settles on a general fitness close to
# what every sport asked for. $(\theta - \bar\phi)$ plays the role of a gradient, and $\varepsilon$ (`outer_lr`)
# of its step size.

# %%
model = models.MLP(init="torch").double()   # float64, so that "equal" below means equal to ~1e-15
theta = params.detach(params.get_params(model))
meta_batch = tasks.sample_sine_tasks(5, shots=10, queries=10, generator=torch.Generator().manual_seed(0),
                                     dtype=torch.float64)
inner_lr, inner_steps, outer_lr = 0.01, 5, 0.5   # α, k, ε

loop = inner.InnerLoop.sgd(inner_lr, inner_steps)                                                        # k SGD steps of α
phis = [reptile.adapt_task(model, theta, task, F.mse_loss, loop)[0] for task in meta_batch]                # φ_i
by_hand = params.lerp(theta, params.mean(phis), outer_lr)                                                 # θ + ε(φ̄ − θ)
library = reptile.reptile_step(model, theta, meta_batch, F.mse_loss, inner_lr, inner_steps, outer_lr)
for name in theta:
    torch.testing.assert_close(by_hand[name], library[name])
print("θ + ε (mean φ − θ) == reptile.reptile_step ✔")

# %% [markdown]
# `reptile_step` returns the new parameters; `reptile.apply_params` copies them into the model.
# No `backward` anywhere: this is why Reptile's memory stayed flat in notebook 05.
#
# ## 2. With k = 1, Reptile is joint training
#
# With a single inner step, $\phi_i - \theta = -\alpha \nabla \mathcal{L}(\theta, \mathcal{T}_i)$, so
#
# $$\theta + \varepsilon(\bar\phi - \theta) = \theta - \varepsilon\alpha\, \nabla_\theta \frac{1}{n}\sum_i \mathcal{L}(\theta, \mathcal{T}_i):$$
#
# one SGD step of size $\varepsilon\alpha$ on the average loss of all tasks pooled: joint training,
# the pretrained baseline of notebook 04. For a fair comparison at any $k$ we let joint training make
# the *same* move: $k$ SGD steps of size $\alpha$ on the pooled loss, then a fraction $\varepsilon$ of the way.
# Numerically:

# %%
widgets.quiz("Predict before you run the next cell: with k = 1 Reptile's move equals joint training's (derived "
             "above). With k = 2, 3, 5 or 10 inner steps, is it still the same move?",
             right=("no: with k > 1 they differ",
                    "The next cell prints the gap for each k and asserts it: from the second step on, each task's "
                    "gradient is taken at its own adapted φ, which joint training never does. That difference is "
                    "where the meta-learning comes from (section 3)."),
             wrong={"yes, for every k: both take k SGD steps of size α": "joint training takes its k steps on the "
                    "pooled loss, Reptile on each task separately: from the second step on the paths part.",
                    "yes, as long as ε = 1": "ε only scales the final move; the two paths already part at the "
                    "second inner step, whatever ε."})

# %%
def gap_to_joint(k):
    new = reptile.reptile_step(model, theta, meta_batch, F.mse_loss, inner_lr, k, outer_lr)
    pooled = reptile.joint_step(model, theta, meta_batch, inner_lr, steps=k)   # k SGD steps on mean_i L_i
    joint = params.lerp(theta, pooled, outer_lr)
    return (params.norm(params.sub(new, joint)) / params.norm(params.sub(joint, theta))).item()

gaps = {k: gap_to_joint(k) for k in [1, 2, 3, 5, 10]}
for k, gap in gaps.items():
    print(f"k = {k:2d}: |Reptile − joint| / |joint move| = {gap:.2e}")
assert gaps[1] < 1e-10, "k = 1 must equal joint training"
assert all(gaps[k] > max(1e-3, 100 * gaps[1]) for k in [2, 3, 5, 10]), "k > 1 must differ"

# %% [markdown]
# With $k = 1$ the two agree to rounding error. With $k > 1$ they differ: each task's
# later steps start from *its own* $\phi_i^{(j)}$, so they see that task's curvature, which pooled
# training averages away.
#
# ## 3. Where the meta-learning comes from (k > 1)
#
# Nichol et al. expand two inner steps to second order in $\alpha$. Write $\bar g_j$ for the gradient
# and $\bar H_j$ for the Hessian of the loss on the $j$-th batch of a task, both at $\theta$. Then
#
# $$g_{\text{MAML}} = \bar g_2 - \alpha \bar H_2 \bar g_1 - \alpha \bar H_1 \bar g_2, \quad
#   g_{\text{FOMAML}} = \bar g_2 - \alpha \bar H_2 \bar g_1, \quad
#   g_{\text{Reptile}} = \bar g_1 + \bar g_2 - \alpha \bar H_2 \bar g_1 \quad (+\,O(\alpha^2)).$$
#
# In expectation over tasks and batches, $\mathbb{E}[\bar H_2 \bar g_1] = \tfrac12 \nabla \mathbb{E}[\bar g_1 \cdot \bar g_2]$:
# all three contain a term that **increases the inner product between gradients of different batches of
# the same task**, i.e. that makes one step on some data of a task help on the rest of it. That is
# fast adaptation. MAML weights this term twice, FOMAML and Reptile once; with $k = 1$ Reptile has no
# $\bar g_2$, so the term vanishes and only joint training is left.
#
# ## 4. The training protocol
#
# `Config(algo="reptile")` holds the sine protocol: SGD in the inner loop, $\varepsilon = 1$ annealed
# linearly to 0 over training (Reptile takes big outer steps early on), and the step size and number of
# inner steps printed here. The full run is `data/sinusoid-reptile.pt`, compared with the others in notebook 07.

# %%
config = Config(algo="reptile").resolved()
print(f"inner SGD: k = {config.inner_steps} steps of α = {config.inner_lr}; ε = {config.outer_lr} annealed: "
      f"{config.anneal}; meta-batch {config.meta_batch_size}")
assert (config.inner_optimizer, config.inner_steps, config.inner_lr, config.outer_lr) == ("sgd", 10, 0.01, 1.0)

# %% [markdown]
# **Does Reptile converge faster?** It is sometimes said to. The project's own data say something more
# precise: one Reptile outer iteration is *cheaper* (no query set, no backward pass through the inner
# loop), but Reptile needs *more* outer iterations. First the cost: one outer iteration of each on the
# same 25 tasks with the same $k = 5$ inner steps, best of three (live, this machine):

# %%
tasks25 = tasks.sample_sine_tasks(25, shots=10, queries=10, generator=torch.Generator().manual_seed(3))
mlp = models.MLP(init="torch")
theta32 = params.detach(params.get_params(mlp), requires_grad=True)

def one_iteration(algo):
    if algo == "reptile":
        return lambda: reptile.reptile_step(mlp, theta32, tasks25, F.mse_loss, 0.01, 5, 0.1)
    loss = lambda: maml.maml_loss(mlp, theta32, tasks25, F.mse_loss, 0.01, 5, first_order=algo == "fomaml")  # noqa: E731
    return lambda: torch.autograd.grad(loss(), list(theta32.values()))

def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)

per_iteration = {algo: best_of(one_iteration(algo)) for algo in ["maml", "fomaml", "reptile"]}
print("  ".join(f"{algo}: {1000 * t:.0f} ms" for algo, t in per_iteration.items()), "per outer iteration")
assert per_iteration["reptile"] < per_iteration["maml"], "a Reptile iteration should cost less than MAML's"

# %% [markdown]
# Then the number of iterations, from the validation accuracy recorded in the shipped 5-way 1-shot
# Omniglot checkpoints (notebook 08): the first outer iteration at which each reached 97%.

# %%
reached = {}
for algo in ["maml", "fomaml", "reptile"]:
    history = checkpoint.load_checkpoint(checkpoint.shipped_checkpoint(algo, task="omniglot"))["history"]
    reached[algo] = next((i for i, v in zip(history["iteration"], history["val_metric"]) if v >= 0.97), None)
    scheduled = Config(task="omniglot", algo=algo).resolved()
    print(f"{algo:8s} 97% validation accuracy first at iteration {reached[algo]} (of {history['iteration'][-1]} run; "
          f"the paper's schedule: {scheduled.iterations} iterations of {scheduled.meta_batch_size} tasks)")
assert reached["reptile"] > 2 * max(reached["maml"], reached["fomaml"]), "Reptile needs more outer iterations"

# %% [markdown]
# So "faster convergence" is wrong as stated: per outer iteration Reptile is cheaper (the timings above),
# but it needs several times more outer iterations (the iterations above; the papers' schedules agree,
# and Reptile's meta-batches are smaller). Which one is faster in wall-clock
# time depends on the problem and the hardware: measure it.

# %% [markdown]
# On Omniglot (notebook 08) the Reptile paper's code uses **Adam** in the inner loop ($\beta_1 = 0$,
# step 0.001), 5 steps on mini-batches of 10 images, and meta-batches of 5 tasks. One detail of that code
# matters a lot: between tasks it resets only the network's weights, so the inner Adam's running
# estimate of the squared gradients (and its step count) **carries over from task to task**, and the test
# tasks are fine-tuned from it too. `mamlkit.inner.AdamState` is that state; `keep_inner_state=True` (the
# default here) keeps it in the run and in its checkpoint. In the README's table it is worth several
# points of accuracy over a fresh Adam for every task.

# %%
omniglot = Config(task="omniglot", algo="reptile").resolved()
{k: getattr(omniglot, k) for k in ["inner_optimizer", "inner_lr", "inner_steps", "inner_batch", "meta_batch_size",
                                   "keep_inner_state"]}

# %% [markdown]
# ## 5. Explore: one Reptile step in a 2-D parameter plane
#
# A linear model $y = w x + b$ has two parameters, so the whole update fits in a picture. Four
# line-fitting tasks have their optima (stars). From $\theta$ (black), each task runs $k$ SGD steps
# (green paths) to $\phi_i$; Reptile moves $\theta$ a fraction $\varepsilon$ toward their mean. The grey
# square makes the same move with $k$ steps of joint training on the pooled tasks. With $k = 1$ the two
# coincide; raise $k$ and they part.

# %%
explorer = widgets.reptile_explorer()
explorer

# %% [markdown]
# ## Summary
#
# - Reptile: $k$ SGD steps per task to $\phi_i$, then $\theta \leftarrow \theta + \varepsilon(\bar\phi - \theta)$:
#   no query set, no second derivatives, flat memory.
# - With $k = 1$ it equals joint training (shown to rounding error); with $k > 1$ it does not.
# - For $k > 1$ its expected update contains the same gradient-alignment term as MAML and FOMAML.

# %% [markdown]
# ## Check yourself

# %%
widgets.quiz("What does Reptile do after adapting to each task?",
             right=("moves θ a fraction ε toward the mean of the adapted φ_i",
                    "θ ← θ + ε (mean φ − θ): an interpolation, no second derivatives."),
             wrong={"backpropagates the query loss through the inner steps": "that is MAML; Reptile never "
                                                                             "differentiates through its inner loop.",
                    "replaces θ by the best φ_i": "θ moves only a fraction ε, toward the mean of all the φ_i: no "
                                                  "single task takes over."})

# %%
widgets.quiz("Reptile with k = 1 inner step is equivalent to...",
             right=("joint training on all tasks pooled (the pretrained baseline)",
                    "φ − θ = −α∇L(θ), so the update is a plain SGD step on the average loss."),
             wrong={"MAML": "MAML differentiates the query loss through the step; Reptile with k = 1 only uses the "
                            "gradient at θ itself, with no adaptation in it.",
                    "FOMAML with k = 1": "FOMAML takes the query gradient at the adapted θ′; Reptile with k = 1 "
                                         "takes the support gradient at θ, before any adaptation."})

# %%
widgets.quiz("Which quantity plays the role of the meta-gradient in Reptile?",
             right=("θ − mean φ", "θ ← θ − ε(θ − φ̄): (θ − φ̄) is the direction a gradient step would take."),
             wrong={"the Hessian of the support loss": "Reptile computes no second derivatives at all, only SGD "
                                                       "steps.",
                    "the query loss": "Reptile's update uses no query loss: it moves toward where SGD on each task "
                                      "went."})

# %% [markdown]
# ## Exercises
#
# **Exercise 6.1 — the Reptile update.** Given $\theta$ (a dict), a list of adapted dicts $\phi_i$ and
# $\varepsilon$, return a new dict $\theta + \varepsilon(\frac1n\sum_i \phi_i - \theta)$. Do not modify `theta`.

# %%
def reptile_update(theta, adapted, outer_lr):
    raise NotImplementedError


checks.check_reptile_update(reptile_update);
