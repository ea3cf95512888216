# %% [markdown]
# # Homework 4 · Reptile (5 points)
#
# **In this assignment you will**
# - write Reptile's interpolation update $\theta \leftarrow \theta + \varepsilon\,(\frac1n \sum_i \phi_i - \theta)$;
# - write a whole Reptile outer step: k plain SGD steps per task, then the move toward the $\phi_i$.
#
# **Prerequisites:** homework 1, notebook 06_reptile.
#
# **How this is graded.** Write your code where it says `# YOUR CODE HERE` (delete the
# `raise NotImplementedError()` line), then run the test cell below it: it prints one line, ✔ or ✘
# with a hint. Hidden tests run the same cells with other inputs when your work is graded: a ✔ is
# necessary, not sufficient. Do not rename the functions or change their arguments; do not edit the
# other cells. Before you submit: *Kernel → Restart Kernel and Run All Cells*.

# %%
import torch
import torch.nn.functional as F

from mamlkit import maml, models, reptile, tasks
from mamlkit.course import checks, homework
from mamlkit.course.notebook import setup_notebook

device = setup_notebook(seed=0)

# %% [markdown]
# ## 4.1 The Reptile update (2 points)
#
# Given $\theta$ (a dict), a list of adapted dicts $\phi_1, \dots, \phi_n$ and $\varepsilon$ (`outer_lr`),
# return a **new** dict $\theta + \varepsilon\,(\frac1n \sum_i \phi_i - \theta)$. Do not modify `params`.

# %% answer id=reptile_update
def reptile_update(params, adapted, outer_lr):
    """θ + ε (mean_i φ_i − θ)."""
    ### BEGIN SOLUTION
    return {name: p + outer_lr * (torch.stack([phi[name] for phi in adapted]).mean(0) - p)
            for name, p in params.items()}
    ### END SOLUTION


# %% tests id=test_reptile_update points=2
assert checks.check_reptile_update(reptile_update)
### BEGIN HIDDEN TESTS
def _hidden_reptile_update():
    from mamlkit import params as P

    g = torch.Generator().manual_seed(8)
    theta = {"w": torch.randn(3, 2, generator=g), "b": torch.randn(2, generator=g)}
    phis = [{k: v + torch.randn(v.shape, generator=g) for k, v in theta.items()} for _ in range(5)]
    for eps in (0.0, 0.1, 1.0):
        mine = reptile_update(theta, phis, eps)
        torch.testing.assert_close(P.flatten({k: mine[k] for k in theta}),
                                   P.flatten(P.lerp(theta, P.mean(phis), eps)))


_hidden_reptile_update()
### END HIDDEN TESTS

# %% [markdown]
# ## 4.2 One Reptile outer step (3 points)
#
# For each task of the batch, start from $\theta$ and take `inner_steps` plain SGD steps of
# `inner_lr` on its support set (no graph is needed: Reptile never differentiates through them) to get
# $\phi_i$; then return your `reptile_update(params, [φ_1, …, φ_n], outer_lr)`. With one inner step
# this is joint training on all tasks pooled; with more it picks up MAML's higher-order term.

# %% answer id=reptile_step
def reptile_step(model, params, tasks, loss_fn, inner_lr, inner_steps, outer_lr):
    """θ + ε (mean_i φ_i − θ), φ_i = ``inner_steps`` SGD steps on task i's support set."""
    ### BEGIN SOLUTION
    phis = []
    for task in tasks:
        phi = maml.adapt(model, params, task.x_support, task.y_support, loss_fn, inner_lr, inner_steps,
                         first_order=True)
        phis.append({name: p.detach() for name, p in phi.items()})
    return reptile_update({name: p.detach() for name, p in params.items()}, phis, outer_lr)
    ### END SOLUTION


# %% tests id=test_reptile_step points=3
assert homework.check_reptile_step(reptile_step)
### BEGIN HIDDEN TESTS
def _hidden_reptile_step():
    from mamlkit import params as P

    torch.manual_seed(9)
    model = models.MLP((1, 10, 10, 1), init="torch").double()
    theta = P.detach(P.get_params(model))
    batch = tasks.sample_sine_tasks(5, 6, 2, torch.Generator().manual_seed(9), dtype=torch.float64)
    mine = reptile_step(model, theta, batch, F.mse_loss, 0.02, 5, 0.7)
    torch.testing.assert_close(P.flatten({k: mine[k] for k in theta}).detach(),
                               P.flatten(reptile.reptile_step(model, theta, batch, F.mse_loss, 0.02, 5, 0.7)))
    # one inner step: Reptile is joint training with step ε α on the pooled support sets
    mine = reptile_step(model, theta, batch, F.mse_loss, 0.02, 1, 0.5)
    torch.testing.assert_close(P.flatten({k: mine[k] for k in theta}).detach(),
                               P.flatten(reptile.joint_step(model, theta, batch, lr=0.5 * 0.02)))


_hidden_reptile_step()
### END HIDDEN TESTS

# %% [markdown]
# ## Before you submit
#
# *Kernel → Restart Kernel and Run All Cells*, check every test cell prints ✔, save, and hand in this
# notebook (`nbgrader` users: *Assignments → Submit*).
