# %% [markdown]
# # 09 · Beyond MAML: Meta-SGD, ANIL, MAML++ and iMAML
#
# **In this notebook you will**
# - learn the inner step size itself (Meta-SGD) and see what it learned, layer by layer;
# - measure how much adaptation changes a network's body — the observation behind ANIL, which adapts the head only;
# - see MAML++'s remedies for MAML's unstable training: learned per-step step sizes and the multi-step loss;
# - measure iMAML's memory against the number of inner steps, beside MAML's linear growth;
# - compare every method on the same fixed test tasks with paired differences.
#
# **Prerequisites:** notebooks 04 (MAML), 05 (First-Order MAML, the memory plot) and 07 (paired comparisons).
#
# All of them run on the same core as MAML: one inner loop (`mamlkit.inner`), trained by the same
# `training.meta_train`, evaluated by the same `evaluate`, chosen with `--algo metasgd|anil|mamlpp|imaml`.

# %%
import time
from functools import partial

import torch
import torch.nn.functional as F
from matplotlib import pyplot as plt

from mamlkit import algorithms, anil, evaluation, imaml, maml, mamlpp, metasgd, models, params, tasks, training
from mamlkit.course import plots, variants, widgets
from mamlkit.course.notebook import fast, load_or_train, measure_cost, setup_notebook
from mamlkit.inner import InnerLoop

device = setup_notebook(seed=0)

# %% [markdown]
# Each method's sine-wave run: the shipped checkpoint in `data/` when there is one, else a short stand-in run
# trained now (the line printed says which, and after how many iterations). MAML, Meta-SGD and ANIL ran the
# 70,000 iterations of the MAML protocol; the shipped MAML++ and iMAML runs are shorter (`data/README.md` says
# how far each went and why): read their numbers as where those runs stand, not as the best each method can do.
# The fixed test tasks are the course's: 5 support points, query MSE.

# %%
ALGOS = ["maml", "metasgd", "anil", "mamlpp", "mamlpp-lslr", "imaml"]  # mamlpp-lslr: MAML++ with all three switches
runs = {algo: load_or_train(algo) for algo in ALGOS}
test = tasks.sine_test_tasks(fast(600, 100))
results = {algo: training.evaluate_run(run, test) for algo, run in runs.items()}


def compare(algo, step, against="maml"):
    """The paired difference algo − against after ``step`` steps and a short verdict; none when a task diverged
    in either run (MSE above 100 or NaN: a mean over such tasks says nothing)."""
    mean, ci = evaluation.paired_difference(results[algo], results[against], step)
    diverged = sum(int(((~torch.isfinite(v)) | (v > 100)).sum())
                   for v in (results[algo].per_task[:, results[algo].steps.index(step)],
                             results[against].per_task[:, results[against].steps.index(step)]))
    if diverged:
        return mean, ci, f"{diverged} diverged"
    return mean, ci, "lower" if mean + ci < 0 else "higher" if mean - ci > 0 else "n.s."

# %% [markdown]
# ## 1. Meta-SGD: learn the step size too
#
# MAML learns where to start, $\theta$; its step size $\alpha$ is a hyper-parameter. **Meta-SGD** (Li et al.
# 2017) learns one step size *per parameter element*, a tensor $\boldsymbol\alpha$ shaped like $\theta$:
#
# $$\theta'_i = \theta - \boldsymbol\alpha \circ \nabla_\theta \mathcal{L}_{\mathcal{T}_i}^{\text{support}}(\theta),
# \qquad (\theta, \boldsymbol\alpha) \leftarrow (\theta, \boldsymbol\alpha) - \beta\, \nabla_{(\theta, \boldsymbol\alpha)}
# \sum_i \mathcal{L}_{\mathcal{T}_i}^{\text{query}}(\theta'_i).$$
#
# In code it is MAML's inner loop with a dict of step sizes instead of a number (`inner.SGD(alpha)`):

# %%
run = runs["metasgd"]
alpha = run.inner_params                                   # one tensor per parameter, learned with θ
loop = metasgd.inner_loop(alpha)                           # θ − α ∘ ∇L, the shared InnerLoop
task = test[0]
adapted, _ = loop.adapt(run.model, F.mse_loss, params.get_params(run.model), task.x_support, task.y_support)
by_hand = {k: v - alpha[k] * g for (k, v), g in zip(params.get_params(run.model).items(), torch.autograd.grad(
    F.mse_loss(params.forward(run.model, params.get_params(run.model), task.x_support), task.y_support),
    list(params.get_params(run.model).values())))}
for k in adapted:
    torch.testing.assert_close(adapted[k], by_hand[k])
print("θ − α ∘ ∇L by hand == metasgd.inner_loop ✔")
for name, (mean, low, high) in variants.step_sizes(alpha).items():
    print(f"  α[{name:9s}] mean {mean:+.4f}, range [{low:+.4f}, {high:+.4f}]")

# %%
variants.plot_step_sizes(alpha, start=run.config.inner_lr);

# %% [markdown]
# One step of each, on the same test tasks: Meta-SGD adapts with its learned $\boldsymbol\alpha$, MAML with
# $\alpha = 0.01$.

# %%
for step in (1, 10):
    mean, ci, verdict = compare("metasgd", step)
    print(f"after {step:2d} step(s): MAML {results['maml'].at(step)[0]:.3f}, Meta-SGD {results['metasgd'].at(step)[0]:.3f}; "
          f"Meta-SGD − MAML = {mean:+.3f} ± {ci:.3f} ({verdict})")

# %% [markdown]
# **Explore.** Pick a task and the number of steps: every method adapts with its own inner loop.

# %%
variants.adaptation_explorer({"maml": runs["maml"], "metasgd": runs["metasgd"]})

# %% [markdown]
# ## 2. ANIL: is the inner loop mostly the head?
#
# Raghu et al. (2020) asked *what* MAML's inner loop changes. If the body's features barely move while the
# head adapts, the inner loop can adapt the **head only** (**A**lmost **N**o **I**nner **L**oop): the inner
# gradient never travels through the body, which is where ANIL saves time. Measure it on the MAML run: after
# 10 steps on each test task's support set, how much does each layer's output on the query set change?

# %%
change = variants.representation_change(runs["maml"].model, test[:fast(100, 30)], F.mse_loss, 0.01, 10)
for layer, value in change.items():
    print(f"  {layer:7s} output changed by {100 * value:5.1f}%")
body = max(v for k, v in change.items() if k != "output")
print(f"largest change in the body: {100 * body:.1f}%; at the output: {100 * change['output']:.1f}%")
variants.plot_representation_change(change, label="(MAML, 10 steps of α = 0.01)");

# %% [markdown]
# ANIL's inner loop, by hand: split the parameters, adapt the head with the body fixed. The library's
# `anil.split` finds the head (the last layer); `anil.head_only` runs the model with a dict of the head alone.

# %%
run = runs["anil"]
head, body = anil.split(run.model)
print("head:", list(head), "| body:", list(body))
with anil.head_only(run.model):
    adapted_head, _ = InnerLoop.sgd(0.01, 5).adapt(run.model, F.mse_loss, head, task.x_support, task.y_support)
assert all(not torch.equal(adapted_head[k], head[k]) for k in head)
print("the body's tensors are the model's own, untouched by the inner loop ✔")

# %% [markdown]
# The price per meta-iteration: one meta-gradient of each on the same meta-batch (25 tasks), timed in turns so
# that a busy machine slows both alike (median of several rounds).

# %%
batch = tasks.sample_sine_tasks(25, 10, 10, torch.Generator().manual_seed(3))


def one_meta_gradient(algo):
    r = runs[algo]
    for p in params.get_params(r.model).values():
        p.grad = None
    start = time.perf_counter()
    algorithms.get(algo).meta_backward(r, batch, False, 1.0) if algo != "maml" else maml.meta_backward(
        r.model, params.get_params(r.model), batch, F.mse_loss, InnerLoop.sgd(0.01, 1))
    return time.perf_counter() - start


times = {"maml": [], "anil": []}
for _ in range(fast(7, 3)):
    for algo in times:
        times[algo].append(one_meta_gradient(algo))
median = {algo: sorted(t)[len(t) // 2] for algo, t in times.items()}
print(f"median per meta-iteration (per-task loop): MAML {1e3 * median['maml']:.1f} ms, ANIL {1e3 * median['anil']:.1f} ms "
      f"→ ANIL takes {median['anil'] / median['maml']:.2f}× MAML's time")
for step in (1, 10):
    mean, ci, verdict = compare("anil", step)
    print(f"after {step:2d} step(s): ANIL − MAML = {mean:+.3f} ± {ci:.3f} ({verdict})")

# %% [markdown]
# On this 1-40-40-1 network the body is small, so the saving is modest; on Omniglot's Conv4 the body holds
# almost all of the computation (`benchmarks/anil_speed.py` measures both).
#
# **Explore.** More steps or a larger $\alpha$: does the body start to move?

# %%
variants.representation_explorer(runs["maml"].model, test[:20], F.mse_loss)

# %% [markdown]
# ## 3. MAML++: taming the inner loop
#
# Notebook 04 showed that MAML trained with the paper's exact protocol learns a sharp initialisation: several
# steps of a fixed $\alpha$ diverge on a few test tasks. The course's default MAML already borrows two of MAML++'s
# remedies (derivative-order annealing and a cosine-annealed $\beta$) and no longer diverges. **MAML++**
# (Antoniou et al. 2019) changes three things (each a switch: `--no-lslr`, `--no-msl`, `--no-doa`):
#
# - **LSLR**: a learned step size per layer *and per step*, $\alpha_{\ell,s}$;
# - **MSL**, the multi-step loss: the query loss after *every* inner step, $\sum_s w_s \mathcal{L}^{\text{query}}(\theta_s)$,
#   weights annealed from uniform toward the last step — every step is trained to help;
# - **DOA**, derivative-order annealing: first-order meta-gradients early (cheap), second order later.
#
# Two MAML++ runs are loaded. `mamlpp` has LSLR switched off (`--no-lslr`): our first sine runs with it on diverged
# during training. The learned step sizes are moved by the outer Adam at the same rate as $\theta$, some of them
# crossed zero (a negative step size climbs the support loss) and the inner loop blew up (the README's "Beyond the
# lesson" gives the iterations). The fix: a learned step size below 0 is *used as 0* — the outer loop can switch a
# layer's adaptation off, but not reverse it. `mamlpp-lslr` is trained that way, all three switches on; its step
# sizes below show what it learned to adapt.

# %%
steps = runs["mamlpp"].config.inner_steps
fig, ax = plt.subplots()
for iteration in (0, 2500, 5000, 10_000):
    ax.plot(range(1, steps + 1), mamlpp.msl_weights(steps, iteration, 10_000), "o-", label=f"iteration {iteration}")
ax.set(xlabel="inner step s", ylabel="weight $w_s$", title="MSL: the multi-step loss's weights anneal")
ax.legend();

# %%
print(f"the MAML++ run without LSLR: every inner step uses α = {runs['mamlpp'].config.inner_lr}")
lslr = runs["mamlpp-lslr"].inner_params
used = {name: values.detach().clamp(min=0) for name, values in lslr.items()}  # below 0: used as 0
fig, ax = plt.subplots()
for name, values in used.items():
    ax.plot(range(1, len(values) + 1), values, "o-", label=name)
ax.axhline(runs["mamlpp-lslr"].config.inner_lr, color="grey", ls="--", lw=1)
ax.set(xlabel="inner step s", ylabel="step size used", title="LSLR: a step size per layer and step")
ax.legend(fontsize="x-small", ncol=2)
print("inner steps in which each tensor adapts (step size > 0):",
      {name: [s + 1 for s, a in enumerate(values) if a > 0] for name, values in used.items()})
for algo in ("maml", "mamlpp", "mamlpp-lslr"):
    diverged = int((~torch.isfinite(results[algo].per_task)).any(1).sum())
    print(f"{plots.label(algo):11s}: MSE after 10 steps {results[algo].at(10)[0]:.3f}, "
          f"{diverged} of {len(test)} test tasks diverged")

# %% [markdown]
# ## 4. iMAML: a meta-gradient whose memory does not grow with the steps
#
# MAML differentiates *through* the inner loop, so it keeps every step's graph: memory grows linearly in $k$
# (notebook 05). **iMAML** (Rajeswaran et al. 2019) adapts by solving a proximal problem,
# $\phi^\star = \arg\min_\phi \mathcal{L}^{\text{support}}(\phi) + \frac{\lambda}{2}\lVert\phi - \theta\rVert^2$,
# and differentiates the *solution* instead of the path: by the implicit function theorem
#
# $$\frac{d\phi^\star}{d\theta}^{\!\top} \nabla \mathcal{L}^{\text{query}}(\phi^\star)
# = \Big(I + \tfrac{1}{\lambda} \nabla^2 \mathcal{L}^{\text{support}}(\phi^\star)\Big)^{-1} \nabla \mathcal{L}^{\text{query}}(\phi^\star),$$
#
# solved by conjugate gradient with Hessian-vector products. The inner steps run without a graph.

# %%
widgets.quiz("Predict before you run: with 16 inner steps instead of 1, one iMAML meta-gradient keeps …",
             ("about the same memory", "The inner steps run without a graph; only the support loss's graph at φ* is "
              "kept for the Hessian-vector products. The next cell measures both methods."),
             {"about 16× the memory, like MAML": "That is MAML, which differentiates through every step and keeps "
              "each one's graph; iMAML differentiates the solution, not the path.",
              "no memory at all": "The Hessian-vector products need one graph of the support loss's gradient at "
              "φ*; that memory is kept, but only once."})

# %%
model = models.MLP(init="torch")
theta = params.get_params(model)
few = tasks.sample_sine_tasks(5, 10, 10, torch.Generator().manual_seed(4))
ks = [1, 2, 4, 8, 16]
memory = {"maml": [], "imaml": []}
for k in ks:
    maml_k = partial(maml.meta_backward, model, theta, few, F.mse_loss, InnerLoop.sgd(0.01, k))
    imaml_k = partial(imaml.meta_backward, model, theta, few, F.mse_loss, imaml.IMAML(lr=0.01, steps=k))
    memory["maml"].append(measure_cost(maml_k, repeats=1)[1])
    memory["imaml"].append(measure_cost(imaml_k, repeats=1)[1])
for k, a, b in zip(ks, memory["maml"], memory["imaml"]):
    print(f"k = {k:2d}: MAML keeps {a / 1e3:7.1f} kB for backward, iMAML {b / 1e3:6.1f} kB")
growth = {name: values[-1] / values[0] for name, values in memory.items()}
print(f"from k = 1 to k = 16: MAML ×{growth['maml']:.1f}, iMAML ×{growth['imaml']:.2f}")
assert growth["imaml"] < 1.1 < growth["maml"]
plots.plot_cost(ks, {n: [v / 1e3 for v in values] for n, values in memory.items()}, "kB kept for backward");

# %% [markdown]
# The inner problem is solved by gradient descent on $\mathcal{L}^{\text{support}}(\phi) + \frac{\lambda}{2}\lVert\phi -
# \theta\rVert^2$, and notebook 04's lesson returns: steps of $\alpha$ diverge where $\alpha(\lambda + \lambda_{\max}) > 2$,
# and meta-training sharpens $\theta$ until they do. So mamlkit's proximal steps are **safeguarded**: each step
# measures the curvature along the last one, $\hat L = \lVert\Delta\nabla\rVert / \lVert\Delta\phi\rVert$, takes a
# step of $\min(\alpha, 1/\hat L)$, and goes back if the last step was too long for it ($\eta \hat L > 2$). On the
# shipped iMAML run, 10 proximal steps on each test task, plain and safeguarded:

# %%
run = runs["imaml"]
theta_imaml = params.get_params(run.model)
settings = algorithms.imaml_settings(run.config)
few_tests = test[:fast(100, 30)]
after_10 = {}
for safeguard in (False, True):
    loop = imaml.proximal_loop(theta_imaml, settings.lam, settings.lr, 10, safeguard)
    final = evaluation.evaluate(run.model, theta_imaml, few_tests, F.mse_loss, evaluation.Protocol(loop)).per_task[:, -1]
    after_10[safeguard] = int((~torch.isfinite(final) | (final > 100)).sum())
    print(f"{'safeguarded' if safeguard else 'plain':11s} steps of α = {settings.lr}: {after_10[safeguard]} of "
          f"{len(few_tests)} test tasks diverge (MSE above 100 or NaN); median MSE {float(final.nanmedian()):.3f}")
assert after_10[True] == 0 < after_10[False]

# %% [markdown]
# ## 5. Every method on the same test tasks
#
# MAML, Meta-SGD, ANIL, MAML++ (without and with LSLR) and iMAML (the runs loaded above). The table: query MSE (mean ± 95% CI) after 1 and 10 steps of each method's own inner loop, and the
# **paired** difference to MAML on the same tasks. A difference is real when its interval excludes 0 (n.s.: not
# significant); where a method diverges on some tasks (MSE above 100 or NaN) the mean says nothing and the count is
# shown instead. iMAML's first proximal step is the one its safeguard cannot check yet (there is no previous step
# to measure the curvature along), so its 1-step error is that of an unchecked step of $\alpha$ from a sharp $\theta$;
# iMAML is meant to be read after its 10 steps.

# %%
print(f"{'':12s}{'1 step':>17s}{'10 steps':>17s}{'− MAML, 1 step':>31s}{'− MAML, 10 steps':>31s}")
for algo, result in results.items():
    row = f"{plots.label(algo):12s}" + "".join(f"{result.at(k)[0]:>9.3f} ± {result.at(k)[1]:.3f}" for k in (1, 10))
    if algo != "maml":
        for k in (1, 10):
            mean, ci, verdict = compare(algo, k)
            row += f"{mean:>+9.3f} ± {ci:.3f} {verdict:>12s}"
    print(row)
plots.plot_eval(results, log=True);

# %% [markdown]
# ## Summary
#
# - **Meta-SGD** learns a step size per parameter element with $\theta$; the same inner loop with a dict of step sizes.
# - **ANIL** adapts the head only; it rests on a measurable fact — how little the body's features move.
# - **MAML++** trains every inner step (MSL), learns a step size per layer and step (LSLR) and starts first order (DOA).
# - **iMAML** differentiates the solution of a proximal inner problem: its memory does not grow with the steps;
#   its inner solver needs the same care as MAML's test-time steps (a step size that respects the curvature).
# - Compare them as in notebook 07: the same tasks, paired differences.
#
# ## Check yourself

# %%
widgets.quiz("Meta-SGD's α is initialised to 0.01 everywhere. After meta-training, can an element of α be negative?",
             ("Yes: α is learned by gradient descent like θ, and nothing keeps it positive",
              "A negative element moves that weight up its support gradient, which can still lower the query loss; "
              "the range printed in §1 shows what this run learned."),
             {"No, step sizes are positive by definition": "That holds for a step size you choose; a learned α is an "
              "ordinary tensor that the outer gradient may push through zero.",
              "Only in the last layer": "Nothing singles out the last layer: every parameter tensor has its own α, "
              "and each element is free to take any sign."})

# %%
widgets.quiz("ANIL's inner loop updates only the head. What gives the body its gradient?",
             ("The outer loop: the query loss after adapting the head is differentiated with respect to the body too",
              "The body is used in every forward pass, so the query loss depends on it; anil.head_only leaves its "
              "tensors in the module, where the outer backward reaches them."),
             {"Nothing: the body stays at its initialisation": "Then ANIL would meta-learn a head on random features; "
              "the body does learn, through the outer loop.",
              "A separate pre-training phase": "ANIL trains body and head in one meta-training run, like MAML; only "
              "the inner loop is restricted to the head."})

# %% [markdown]
# ## Exercises
#
# **Exercise 9.1 — ANIL's inner step.** Write `anil_step(model, head, x, y, loss_fn, inner_lr)`: one SGD step
# on the **head only** — `head` is a dict of the head's parameters; run the model with `anil.head_only(model)`
# so that the body is the model's own; keep the graph (`create_graph=True`) so the outer loop can differentiate.
# Return the new head dict.

# %%
def anil_step(model, head, x, y, loss_fn, inner_lr):
    # YOUR CODE
    raise NotImplementedError


variants.check_anil_step(anil_step);

# %% [markdown]
# **Open questions** (no checker).
# 1. In §2, raise α in the explorer until the body moves as much as the output. Would ANIL still be a good
#    approximation of MAML there?
# 2. Meta-SGD doubles the number of learned numbers. On 5 support points, when could that overfit?
