# %% [markdown]
# # 07 · MAML, FOMAML and Reptile side by side
#
# **In this notebook you will**
# - load the four full runs (MAML, First-Order MAML, Reptile, and the pretrained baseline);
# - evaluate them on the same 600 test tasks with the same adaptation, mean ± 95% CI;
# - read the results honestly: which differences are real, what each method costs;
# - adapt all four to a task of your choice with an algorithm selector.
#
# **Prerequisites:** notebooks 04 (MAML), 05 (FOMAML) and 06 (Reptile).

# %%
import torch.nn.functional as F
from matplotlib import pyplot as plt

from mamlkit import evaluation, params, tasks
from mamlkit.course import checks, plots, widgets
from mamlkit.course.notebook import fast, load_or_train, setup_notebook

device = setup_notebook(seed=0)

# %% [markdown]
# ## 1. The four runs
#
# Each was trained by the project's command line (`python -m mamlkit train --task sinusoid --algo ...`)
# with the settings below. They share the model (MLP 1-40-40-1), the task distribution and the number
# of outer iterations; they differ in the outer update.

# %%
algos = ["maml", "fomaml", "reptile", "pretrain"]
runs = {algo: load_or_train(algo) for algo in algos}
for algo, run in runs.items():
    c = run.config
    print(f"{algo:9s} α={c.inner_lr:<5} outer_lr={c.outer_lr:<6} inner steps k={c.inner_steps} "
          f"meta-batch={c.meta_batch_size} K={c.shots} iterations={run.iteration}")

# %% [markdown]
# | | outer update | needs a query set | second derivatives | memory in $k$ |
# |---|---|---|---|---|
# | MAML | $\theta \leftarrow \theta - \beta \nabla_\theta \sum_i \mathcal{L}(\theta'_i, \mathcal{T}_i)$ | yes | yes | grows |
# | FOMAML | $\theta \leftarrow \theta - \beta \sum_i \nabla_{\theta'} \mathcal{L}(\theta'_i, \mathcal{T}_i)$ | yes | no | flat |
# | Reptile | $\theta \leftarrow \theta + \varepsilon(\bar\phi - \theta)$ | no | no | flat |
# | pretrained | $\theta \leftarrow \theta - \beta \nabla_\theta \sum_i \mathcal{L}(\theta, \mathcal{T}_i)$ (no inner loop) | no | no | — |
#
# ## 2. The same test, for everyone
#
# 600 fixed test tasks (100 with `MAMLKIT_FAST=1`), 5 support points each, 0 to 10 SGD steps with
# $\alpha = 0.01$ at test time, query MSE on 100 points: mean ± 95% CI.

# %%
test = tasks.sine_test_tasks(fast(600, 100))
results = {algo: evaluation.evaluate(run.model, params.get_params(run.model), test, F.mse_loss,
                                     evaluation.Protocol.sgd(inner_lr=0.01, inner_steps=10))
           for algo, run in runs.items()}
print(f"{'':9s}" + "".join(f"{f'{k} steps':>17s}" for k in (0, 1, 5, 10)))
for algo, result in results.items():
    print(f"{algo:9s}" + "".join(f"{result.at(k)[0]:>9.3f} ± {result.at(k)[1]:.3f}" for k in (0, 1, 5, 10)))

# %% [markdown]
# As a figure (log scale, so that the small errors of the meta-learners stay visible):

# %%
plots.plot_eval(results, log=True);

# %% [markdown]
# ## 3. Which differences are real?
#
# A tempting rule says two methods differ when their 95% intervals do not overlap. It is wrong: the
# interval of a *difference* is narrower than the two intervals side by side (for independent results
# $\pm\sqrt{c_a^2 + c_b^2}$, not $\pm(c_a + c_b)$), so two intervals can overlap while the difference is
# significant. And here the results are not independent: every method is scored on the **same** 600
# tasks, and a task that is hard for one method (a large amplitude, say) is hard for all of them. The
# right tool is the **paired** test: take the per-task differences $d_i = e_{a,i} - e_{b,i}$, then their
# mean and 95% interval $\bar d \pm 1.96\, s_d / \sqrt{n}$. The difference is significant (at the 5%
# level) when that interval excludes 0. `evaluation.paired_difference(a, b, step)` computes it; first by
# hand, for MAML − FOMAML after one step:

# %%
d = results["maml"].per_task[:, 1] - results["fomaml"].per_task[:, 1]     # per-task differences, step 1
by_hand = (d.mean().item(), 1.96 * d.std().item() / len(d) ** 0.5)
library = evaluation.paired_difference(results["maml"], results["fomaml"], step=1)
print(f"MAML − FOMAML after 1 step: {by_hand[0]:+.3f} ± {by_hand[1]:.3f} (by hand), "
      f"{library[0]:+.3f} ± {library[1]:.3f} (library), over {len(d)} tasks")
assert abs(by_hand[0] - library[0]) < 1e-6 and abs(by_hand[1] - library[1]) < 1e-6

# %% [markdown]
# Now every pair after one step. For each: the paired interval, the unpaired one
# $\pm\sqrt{c_a^2 + c_b^2}$ (as if the tasks were different), and what the overlap rule would say:

# %%
widgets.quiz("Predict before you run the next cell: all methods were scored on the same test tasks. Compared with "
             "the unpaired interval ± √(c_a² + c_b²), the paired interval of the per-task differences is…",
             right=("narrower: a task that is hard for one method is hard for the other, and a − b cancels that",
                    "The next cell prints both for every pair and asserts that the paired one is never the wider."),
             wrong={"wider: a difference adds the noise of both methods": "it would on independent task sets; on "
                    "the same tasks the difficulty both methods share cancels in a − b.",
                    "the same: it is the same data": "same data, another question: pairing removes the variation "
                    "between tasks that both methods share, so the interval shrinks."})

# %%
def verdict(low_high):
    return "significant" if low_high[0] > 0 or low_high[1] < 0 else "not significant"

pairs = [("maml", "pretrain"), ("fomaml", "pretrain"), ("reptile", "pretrain"), ("maml", "fomaml"),
         ("maml", "reptile"), ("fomaml", "reptile")]
paired = {}
for a, b in pairs:
    (mean_a, ci_a), (mean_b, ci_b) = results[a].at(1), results[b].at(1)
    mean, ci = paired[a, b] = evaluation.paired_difference(results[a], results[b], step=1)
    unpaired = (ci_a**2 + ci_b**2) ** 0.5
    overlap = abs(mean_a - mean_b) <= ci_a + ci_b
    print(f"{a:7s} − {b:8s}: {mean:+.3f} ± {ci:.3f} paired: {verdict((mean - ci, mean + ci)):15s} | "
          f"± {unpaired:.3f} unpaired | intervals {'overlap' if overlap else 'apart'}")
    assert not ci > unpaired, "on the same tasks the paired interval should be the narrower"
if all(run.iteration >= 10_000 for run in runs.values()):  # the shipped checkpoints
    for algo in ["maml", "fomaml", "reptile"]:
        mean, ci = paired[algo, "pretrain"]
        assert mean + ci < 0, f"{algo} should beat the pretrained baseline after one step"

# %% [markdown]
# Read the verdicts from the printout, not from the figure. The paired intervals are narrower than the
# unpaired ones because the task-to-task variation, shared by all methods, cancels in $d_i$. The
# summary, from the numbers above:

# %%
maml_fo, ci_fo = paired["maml", "fomaml"]
print("All three meta-learners minus the baseline after one step: "
      + ", ".join(f"{a} {paired[a, 'pretrain'][0]:+.2f} ± {paired[a, 'pretrain'][1]:.2f}"
                  for a in ["maml", "fomaml", "reptile"]) + ".")
print(f"MAML − FOMAML: {maml_fo:+.3f} ± {ci_fo:.3f}, {verdict((maml_fo - ci_fo, maml_fo + ci_fo))}"
      f"{' (MAML lower)' if maml_fo + ci_fo < 0 else ' (FOMAML lower)' if maml_fo - ci_fo > 0 else ''}.")
between = max(abs(paired[a, b][0]) for a, b in pairs if b != "pretrain")
to_baseline = min(abs(paired[a, "pretrain"][0]) for a in ["maml", "fomaml", "reptile"])
print(f"largest difference between meta-learners: {between:.3f}; smallest gap to the baseline: {to_baseline:.3f}")
if all(run.iteration >= 10_000 for run in runs.values()):
    assert between < to_baseline / 3, "the meta-learners' differences should be small next to the baseline's"

# %% [markdown]
# The differences between the meta-learners are small next to their gap to the baseline: MAML's extra
# second-order work buys little here next to what any of them gains over the baseline, which is why FOMAML and
# Reptile are popular for large models. (MAML trained with the paper's exact protocol diverges under repeated
# steps on two test tasks, notebook 04; the course's default MAML, shown here, anneals the derivative order and
# does not. If a 5- or 10-step column reads `nan` or carries a huge interval, a test task diverged.)
#
# ## 4. On one task
#
# The 5-shot task of notebook 04's figure, adapted with 0, 1 and 10 steps by each model.

# %%
all_test = tasks.sine_test_tasks(600)
task = all_test[int(all_test.info[:20, 0].argmax())]
fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), sharex=True, sharey=True)
for ax, (algo, run) in zip(axes.flat, runs.items()):
    plots.plot_adaptation(run.model, params.get_params(run.model), task, 0.01, (0, 1, 10), ax=ax, name=algo)
    ax.set(ylim=(-6, 6), xlabel="")
fig.tight_layout()

# %% [markdown]
# ## 5. Explore: pick an algorithm
#
# Choose one method (or all), the step size $\alpha$, the number of steps, $K$ and the task. Things to
# try: $K = 1$; 10 steps with $\alpha = 0.1$; a task with a small amplitude; which method degrades
# most gracefully when you change the setting it was trained for?

# %%
explorer = widgets.adaptation_explorer({algo: run.model for algo, run in runs.items()}, steps=1, max_steps=10)
explorer

# %% [markdown]
# ## 6. Beyond sine waves
#
# Back to the athlete of notebook 00: the algorithms are the coach, the model is the athlete, and
# any athlete will do.
# None of this code knew it was fitting sine waves with an MLP: `maml.maml_loss`, `reptile.reptile_step`
# and `evaluation.evaluate` take any model and any loss. Notebook **08_characters** runs the same
# algorithms on few-shot recognition of handwritten characters (Omniglot) with a CNN: adapting a
# classifier to new characters from one or five examples each.

# %% [markdown]
# ## Summary
#
# - Same model, tasks and test protocol: MAML, FOMAML and Reptile all beat the pretrained baseline by far.
# - Their mutual differences on sine waves are small next to the baseline's; decide with the **paired**
#   test (per-task differences on the same tasks, 95% CI excluding 0), not by overlapping intervals.
# - Costs differ: MAML needs second derivatives and memory growing with $k$; FOMAML and Reptile do not;
#   Reptile does not even need a query set.
# - The algorithms are model-agnostic: notebook 08 runs them on images.
# - Variations are relevant in every task (the mnemonic **VARIETY**): pick by cost and by what your tasks need.

# %% [markdown]
# ## Check yourself

# %%
widgets.quiz("Which method needs no query set during meta-training?",
             right=("Reptile", "Reptile only runs SGD on each task's data and moves toward the result."),
             wrong={"MAML": "MAML's outer loss is the query loss after adaptation.",
                    "FOMAML": "FOMAML drops the Hessian term but still takes the query gradient at θ′."})

# %%
widgets.quiz("What makes this comparison fair?",
             right=("same model, same test tasks, same adaptation at test time, mean ± 95% CI",
                    "Only the training algorithm differs; the test is identical and fixed in advance."),
             wrong={"every method gets its own best test procedure": "then a difference would mix training and "
                                                                     "testing; a fair test fixes one procedure for all.",
                    "each method is tested on the tasks it was trained on": "that measures memory, not adaptation: "
                                                                            "the test tasks come from a seed no "
                                                                            "training run used."})

# %%
widgets.quiz("You must meta-train a large network with 10 inner steps and little GPU memory. Which is the safest choice?",
             right=("FOMAML or Reptile",
                    "Their memory does not grow with the inner steps, and they keep most of MAML's accuracy."),
             wrong={"MAML": "MAML keeps the graph of all 10 inner steps: its memory grows linearly with them "
                            "(notebook 05).",
                    "the pretrained baseline": "it is cheap, but it does not meta-learn: section 3 compares it with "
                                               "the three meta-learners after one step."})

# %% [markdown]
# ## Exercises
#
# **Exercise 7.1 — the paired test.** `errors_a` and `errors_b` are two methods' per-task errors on the
# *same* tasks (1-D tensors, task $i$ in row $i$ of both). Return `True` when the difference is significant:
# the 95% interval $\bar d \pm 1.96\, s_d/\sqrt{n}$ of the per-task differences $d = a - b$ excludes 0
# ($s_d$: the unbiased standard deviation), else `False`. (Compare with `evaluation.paired_difference`.)

# %%
def significant(errors_a, errors_b):
    raise NotImplementedError


checks.check_significant(significant);
