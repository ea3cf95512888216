# %% [markdown]
# # 05 · First-Order MAML: dropping the second-order term
#
# **In this notebook you will**
# - write the First-Order MAML (FOMAML) update and see the one switch that turns MAML into it;
# - measure how well its meta-gradient agrees with MAML's (cosine similarity);
# - measure, live, the time and memory of MAML, FOMAML and Reptile for 1 to 5 inner steps, and
#   explain the difference;
# - compare the accuracy of the trained MAML and FOMAML models.
#
# **Prerequisites:** notebook 03 (the meta-gradient and its Hessian term), notebook 04 (MAML).

# %%
import torch
import torch.nn.functional as F
from matplotlib import pyplot as plt

from mamlkit import evaluation, maml, models, params, reptile, tasks
from mamlkit.course import checks, plots, widgets
from mamlkit.course.notebook import fast, load_or_train, measure_cost, setup_notebook

device = setup_notebook(seed=0)

# %% [markdown]
# ## 1. The first-order approximation
#
# MAML's meta-gradient for one inner step is $(I - \alpha H)\,\nabla_{\theta'}\mathcal{L}_{\text{query}}(\theta'_i)$.
# The Hessian $H$ is expensive: backpropagating through the inner step means differentiating a
# gradient. **First-Order MAML** (Finn et al. 2017, §5.2) simply drops it:
#
# $$\nabla_\theta \mathcal{L}(\theta'_i, \mathcal{T}_i) \approx \nabla_{\theta'} \mathcal{L}(\theta'_i, \mathcal{T}_i),
# \qquad \theta \leftarrow \theta - \beta \sum_i \nabla_{\theta'} \mathcal{L}(\theta'_i, \mathcal{T}_i).$$
#
# The adapted parameters are computed exactly as before; only the *gradient* through the inner
# step is cut. In `mamlkit` that is one argument, which reaches `create_graph=not first_order`
# inside `maml.inner_update`.

# %%
runs = {algo: load_or_train(algo) for algo in ["maml", "fomaml"]}
maml_model = runs["maml"].model
theta = params.detach(params.get_params(maml_model), requires_grad=True)
meta_batch = tasks.sample_sine_tasks(25, shots=10, queries=10, generator=torch.Generator().manual_seed(5))

def meta_gradient(first_order, inner_lr=0.01, inner_steps=1):
    loss = maml.maml_loss(maml_model, theta, meta_batch, F.mse_loss, inner_lr, inner_steps, first_order=first_order)
    return params.flatten(dict(zip(theta, torch.autograd.grad(loss, list(theta.values())))))

second, first = meta_gradient(first_order=False), meta_gradient(first_order=True)
print(f"MAML   meta-gradient norm: {second.norm().item():.3f}")
print(f"FOMAML meta-gradient norm: {first.norm().item():.3f}")

# %% [markdown]
# ## 2. Gradient agreement
#
# How close is the approximation? The **cosine similarity** $\frac{g_{\text{MAML}} \cdot g_{\text{FO}}}{\lVert g_{\text{MAML}}\rVert\,\lVert g_{\text{FO}}\rVert}$
# is 1 when both point the same way. The dropped term is $\alpha H \nabla \mathcal{L}_{\text{query}}$:
# it vanishes as $\alpha \to 0$ and is large where the support loss is strongly curved.

# %%
cosine = F.cosine_similarity(second, first, dim=0).item()
print(f"cosine similarity at the trained θ, α = 0.01, one step: {cosine:.3f}")
untrained = models.MLP()  # the same network before meta-training
print("cosine similarity at an untrained θ:",
      f"{maml.gradient_agreement(untrained, params.get_params(untrained), meta_batch, 0.01, 1)[2]:.3f}")

# %% [markdown]
# Now at the trained $\theta$, for three step sizes and 1, 3 and 5 inner steps
# (`maml.gradient_agreement` computes both meta-gradients and their cosine):

# %%
agreement = {}
for inner_lr in [0.001, 0.01, 0.05]:
    agreement[inner_lr] = [maml.gradient_agreement(maml_model, theta, meta_batch, inner_lr, k)[2] for k in (1, 3, 5)]
    print(f"α = {inner_lr:<6}" + "".join(f"  {k} steps: {c:.3f}" for k, c in zip((1, 3, 5), agreement[inner_lr])))
assert agreement[0.001][0] > 0.9, "for small α the two meta-gradients must agree"

# %% [markdown]
# Agreement is near 1 for tiny $\alpha$ and at an untrained $\theta$. At the *meta-trained* $\theta$ it can
# be much lower: MAML has found a point where the support loss is sharply curved (that is what makes a
# single step so effective), exactly where $\alpha H$ matters. Yet, as section 4 shows, FOMAML trained
# from scratch still reaches a starting point almost as good: an approximate gradient can lead to a
# good $\theta$ without matching the exact one everywhere.

# %% [markdown]
# ## 3. Time and memory, measured live
#
# For 1 to 5 inner steps we count the bytes of the tensors autograd keeps for the backward pass
# (`torch.autograd.graph.saved_tensors_hooks`, peak alive at once) and time one meta-gradient on 10 tasks.
# Timings of a few milliseconds are noisy (other programs, caches), so each is repeated, in an interleaved
# order, and we keep the median and the spread of the repeats.

# %%
widgets.quiz("Predict before you run the measurement below: as the inner steps go from 1 to 5, the memory MAML "
             "keeps for its backward pass…",
             right=("grows by the same number of bytes with every step",
                    "MAML differentiates through every inner step, so it keeps each step's graph: the check cell at "
                    "the end of this section prints the bytes added per step and asserts they are always the same."),
             wrong={"stays flat, like FOMAML's": "FOMAML may forget the inner steps because it treats their "
                    "gradients as constants; MAML backpropagates through them, so it must keep them.",
                    "doubles with every step": "each step adds one more graph of the same size, a fixed number of "
                    "bytes: linear, not exponential."})

# %% [markdown]
# What each algorithm keeps:
#
# - **MAML** (second order) keeps the graph of *every* inner step, since it differentiates through all of them;
# - **FOMAML** keeps only the last forward pass on the query set;
# - **Reptile** (notebook 06) never differentiates through the inner loop: it just runs $k$ SGD steps.

# %%
small_batch = meta_batch[:10]  # the first 10 tasks

def maml_cost(first_order, k):
    def run():
        loss = maml.maml_loss(maml_model, theta, small_batch, F.mse_loss, 0.01, k, first_order=first_order)
        torch.autograd.grad(loss, list(theta.values()))
    return measure_cost(run, repeats=fast(3, 1))

def reptile_cost(k):
    return measure_cost(lambda: reptile.reptile_step(maml_model, theta, small_batch, F.mse_loss, 0.01, k, 0.1),
                        repeats=fast(3, 1))

steps = [1, 2, 3, 4, 5]
cost = {"maml": [maml_cost(False, k) for k in steps], "fomaml": [maml_cost(True, k) for k in steps],
        "reptile": [reptile_cost(k) for k in steps]}
memory = {name: [b for _, b in rows] for name, rows in cost.items()}

jobs = {"maml": lambda k: maml_cost(False, k), "fomaml": lambda k: maml_cost(True, k), "reptile": reptile_cost}
repeats = fast(7, 5)
samples = {(name, k): [] for name in jobs for k in steps}
for _ in range(repeats):                       # interleaved: a slow moment hits every setting alike
    for name, job in jobs.items():
        for k in steps:
            samples[name, k].append(job(k)[0])
ms = {name: torch.tensor([samples[name, k] for k in steps]) * 1000 for name in jobs}   # (steps, repeats)
median = {name: t.median(1).values for name, t in ms.items()}
design = torch.tensor([[1.0, k] for k in steps])
growth = {}
for name in jobs:
    slopes = torch.linalg.lstsq(design, ms[name]).solution[1]       # one fitted ms-per-step for each sweep
    slope, ci = slopes.mean().item(), 1.96 * slopes.std().item() / repeats ** 0.5
    growth[name] = slope - ci                                          # > 0: grows beyond the noise
    print(f"{name:8s} median ms: " + " ".join(f"{v:5.2f}" for v in median[name]) +
          " | memory kB: " + " ".join(f"{b / 1024:4.0f}" for b in memory[name]) +
          f" | {slope:+.2f} ± {ci:.2f} ms per step: " + ("grows" if growth[name] > 0 else "flat within noise"))

# %% [markdown]
# Time (left) and memory (right) against the number of inner steps:

# %%
fig, (ax_time, ax_memory) = plt.subplots(1, 2, figsize=(9, 3))
plots.plot_cost(steps, {n: median[n].tolist() for n in jobs}, "time per meta-gradient (ms, median)", ax_time)
plots.plot_cost(steps, {n: [b / 1024 for _, b in rows] for n, rows in cost.items()}, "saved for backward (kB)", ax_memory);

# %% [markdown]
# Memory is the clear signal, and it is exact: MAML's grows by the same number of bytes with every
# inner step (it keeps every step's graph), FOMAML's and Reptile's stay flat. Time is noisier: read the
# verdicts printed above (each sweep over $k$ gives a slope in ms per step; "grows" when their 95% interval
# lies above 0). Expect MAML's time to grow most, since its backward pass goes through every inner step
# again, second derivatives included; on a busy machine even that can drown in the noise. FOMAML and Reptile also run $k$ inner steps, but on this tiny network an extra
# first-order step costs little next to the fixed overheads, so their growth can drown in the noise.
# On a big network (notebook 08) MAML's memory is the difference between fitting on a GPU or not.

# %% [markdown]
# The memory claims, checked on the numbers just measured:

# %%
extra = [later - earlier for earlier, later in zip(memory["maml"], memory["maml"][1:])]
print(f"MAML: {memory['maml'][0]} bytes for 1 step, then +{extra[0]} bytes for every further step")
assert len(set(extra)) == 1 and extra[0] > 0, "MAML's memory should be exactly linear in the inner steps"
assert median["maml"][-1] > median["maml"][0], "MAML's time should grow with the steps"
assert max(memory["fomaml"]) < 1.2 * min(memory["fomaml"]) and max(memory["reptile"]) < 1.2 * min(memory["reptile"])

# %% [markdown]
# ## 4. Does dropping the term hurt?
#
# The paper found FOMAML almost as good as MAML on sine waves and on images. The full FOMAML run
# (`data/sinusoid-fomaml.pt`) against MAML, on the same test tasks:

# %%
test = tasks.sine_test_tasks(fast(600, 100))
results = {algo: evaluation.evaluate(run.model, params.get_params(run.model), test, F.mse_loss,
                                     evaluation.Protocol.sgd(0.01, 10))
           for algo, run in runs.items()}
for algo, result in results.items():
    print(f"{algo:7s}", "  ".join(f"{k} steps: {result.at(k)[0]:.3f} ± {result.at(k)[1]:.3f}" for k in (0, 1, 10)))
plots.plot_eval(results);

# %% [markdown]
# ## 5. Explore: agreement against α and the number of steps
#
# Each dot is one component of the meta-gradient: MAML on the x axis, FOMAML on the y axis. On the
# diagonal they agree. Raise $\alpha$ or the steps and the cloud spreads.

# %%
explorer = widgets.first_order_explorer(maml_model, small_batch)
explorer

# %% [markdown]
# ## Summary
#
# - FOMAML drops the Hessian term: its meta-gradient is the query gradient at $\theta'_i$ (`first_order=True`).
# - Its agreement with MAML is high for small $\alpha$; at MAML's sharply curved trained $\theta$ it can be low.
# - MAML's memory grows linearly with the inner steps; FOMAML's and Reptile's stay flat.
# - On sine waves the accuracy cost is small.

# %% [markdown]
# ## Check yourself

# %%
widgets.quiz("What does First-Order MAML drop?",
             right=("the second-order (Hessian) term of the meta-gradient",
                    "It keeps the adaptation but treats the inner gradient as a constant: no ∇² term."),
             wrong={"the inner loop": "FOMAML still adapts with the same inner steps; only the outer gradient is "
                                      "simplified.",
                    "the query set": "the outer gradient is still ∇L_query, taken at θ′: the query set stays."})

# %%
widgets.quiz("Why does MAML's memory grow with the number of inner steps?",
             right=("it keeps the graph of every inner step to differentiate through it",
                    "Backpropagating through k steps needs the activations of all k of them."),
             wrong={"it stores every task": "the tasks are the same for every k; what grows with k is the graph "
                                            "autograd keeps.",
                    "Adam keeps more state": "Adam keeps two tensors per parameter whatever the number of inner "
                                             "steps, and section 3 measured the tensors saved for backward."})

# %%
widgets.quiz("When does FOMAML's meta-gradient agree best with MAML's?",
             right=("small α and weak curvature of the support loss",
                    "The dropped term is αH∇L_query: it vanishes as α → 0."),
             wrong={"large α": "the dropped term αH∇L_query grows with α, so the two part as α grows.",
                    "sharply curved support loss": "strong curvature is a large H, hence a large dropped term "
                                                   "αH∇L_query."})

# %% [markdown]
# ## Exercises
#
# **Exercise 5.1 — the first-order meta-gradient of one task.** Take one inner step on the support
# set, then return $\nabla_{\theta'}\mathcal{L}_{\text{query}}(\theta')$ as a dict name → tensor,
# without any Hessian term.

# %%
def first_order_gradient(model, theta, task, loss_fn, inner_lr):
    raise NotImplementedError


checks.check_first_order(first_order_gradient);
