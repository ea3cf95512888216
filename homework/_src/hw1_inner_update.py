# %% [markdown]
# # Homework 1 · The inner update (7 points)
#
# **In this assignment you will**
# - write the inner update $\theta' = \theta - \alpha \nabla_\theta \mathcal{L}(\theta, \mathcal{T}_i)$ on a
#   parameter dict, keeping the graph for the outer update;
# - take several inner steps;
# - measure how fast a model adapts: the query loss after 0, 1, …, k steps.
#
# **Prerequisites:** notebooks 01_tasks and 02_inner_update.
#
# **How this is graded.** Write your code where it says `# YOUR CODE HERE` (delete the
# `raise NotImplementedError()` line), then run the test cell below it: it prints one line, ✔ or ✘
# with a hint. Hidden tests run the same cells with other inputs when your work is graded: a ✔ is
# necessary, not sufficient. Do not rename the functions or change their arguments; do not edit the
# other cells. Before you submit: *Kernel → Restart Kernel and Run All Cells*.

# %%
import torch
import torch.nn.functional as F

from mamlkit import maml, models, tasks
from mamlkit.course import checks, homework
from mamlkit.course.notebook import setup_notebook
from mamlkit.params import forward

device = setup_notebook(seed=0)

# %% [markdown]
# ## 1.1 One inner step (3 points)
#
# Parameters are a dict name → tensor $\theta$; `forward(model, params, x)` runs the network with
# them. On the support set $(x, y)$ of task $\mathcal{T}_i$:
#
# $$\theta' = \theta - \alpha \nabla_\theta \mathcal{L}(\theta), \qquad
# \mathcal{L}(\theta) = \texttt{loss\_fn}(f_\theta(x), y).$$
#
# Return a **new** dict (do not modify `params`). Keep the graph of the gradient
# (`create_graph=True`): the outer update differentiates through your step.

# %% answer id=inner_update
def inner_update(model, params, x, y, loss_fn, inner_lr):
    """θ' = θ − α ∇_θ loss_fn(f_θ(x), y), differentiable (second order)."""
    ### BEGIN SOLUTION
    loss = loss_fn(forward(model, params, x), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    return {name: p - inner_lr * g for (name, p), g in zip(params.items(), grads)}
    ### END SOLUTION


# %% tests id=test_inner_update points=3
assert checks.check_inner_update(inner_update)
### BEGIN HIDDEN TESTS
def _hidden_inner_update():
    from mamlkit import params as P

    torch.manual_seed(1)
    model = models.MLP((3, 6, 4), init="torch").double()  # a classifier: loss_fn must be used, not MSE
    theta = P.detach(P.get_params(model), requires_grad=True)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 4, (8,))
    before = P.flatten(theta).detach().clone()
    mine = inner_update(model, theta, x, y, F.cross_entropy, 0.3)
    ref = maml.inner_update(model, theta, x, y, F.cross_entropy, 0.3)
    assert set(mine) == set(theta), "the result must have the same names as params"
    torch.testing.assert_close(P.flatten({k: mine[k] for k in theta}), P.flatten(ref))
    assert torch.equal(P.flatten(theta).detach(), before), "params was modified in place"
    meta = [F.cross_entropy(forward(model, a, x[:4]), y[:4]) for a in (mine, ref)]
    grads = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(m, list(theta.values()))]) for m in meta]
    torch.testing.assert_close(grads[0], grads[1])


_hidden_inner_update()
### END HIDDEN TESTS

# %% [markdown]
# ## 1.2 Several inner steps (2 points)
#
# Adaptation takes `inner_steps` inner updates on the same support set, each starting from the last
# $\theta'$. Use your `inner_update`.

# %% answer id=adapt
def adapt(model, params, x, y, loss_fn, inner_lr, inner_steps):
    """``inner_steps`` inner updates on the support set (x, y)."""
    ### BEGIN SOLUTION
    for _ in range(inner_steps):
        params = inner_update(model, params, x, y, loss_fn, inner_lr)
    return params
    ### END SOLUTION


# %% tests id=test_adapt points=2
assert checks.check_adapt(adapt)
### BEGIN HIDDEN TESTS
def _hidden_adapt():
    from mamlkit import params as P

    torch.manual_seed(2)
    model = models.MLP((1, 5, 5, 1), init="torch").double()
    theta = P.detach(P.get_params(model), requires_grad=True)
    x, y = torch.randn(6, 1, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    for steps in (1, 5):
        mine = adapt(model, theta, x, y, F.mse_loss, 0.02, steps)
        torch.testing.assert_close(P.flatten({k: mine[k] for k in theta}),
                                   P.flatten(maml.adapt(model, theta, x, y, F.mse_loss, 0.02, steps)))


_hidden_adapt()
### END HIDDEN TESTS

# %% [markdown]
# ## 1.3 How fast does a model adapt? (2 points)
#
# Return the **query** loss (as Python floats) before adapting and after each of the `inner_steps`
# inner steps on the **support** set of `task`: a list of `inner_steps + 1` numbers. This is the
# curve notebook 04 plots for MAML against the pretrained baseline. No graph is needed here
# (`float(loss)` or `loss.item()`).

# %% answer id=adaptation_curve
def adaptation_curve(model, params, task, loss_fn, inner_lr, inner_steps):
    """[L_query(θ), L_query(θ'_1), …, L_query(θ'_k)] as floats."""
    ### BEGIN SOLUTION
    curve = [loss_fn(forward(model, params, task.x_query), task.y_query).item()]
    for _ in range(inner_steps):
        params = inner_update(model, params, task.x_support, task.y_support, loss_fn, inner_lr)
        curve.append(loss_fn(forward(model, params, task.x_query), task.y_query).item())
    return curve
    ### END SOLUTION


# %% tests id=test_adaptation_curve points=2
assert homework.check_adaptation_curve(adaptation_curve)
### BEGIN HIDDEN TESTS
def _hidden_adaptation_curve():
    from mamlkit import params as P

    torch.manual_seed(3)
    model = models.MLP((1, 8, 1), init="torch")
    theta = P.detach(P.get_params(model), requires_grad=True)
    task = tasks.sample_sine_tasks(1, 10, 20, torch.Generator().manual_seed(3))[0]
    curve = adaptation_curve(model, theta, task, F.mse_loss, 0.01, 6)
    assert len(curve) == 7 and all(isinstance(v, float) for v in curve)
    phis = homework.maml_trajectory(model, theta, task.x_support, task.y_support, 0.01, 6)
    expected = [F.mse_loss(forward(model, phi, task.x_query), task.y_query).item() for phi in phis]
    torch.testing.assert_close(torch.tensor(curve), torch.tensor(expected))


_hidden_adaptation_curve()
### END HIDDEN TESTS

# %% [markdown]
# ## Before you submit
#
# *Kernel → Restart Kernel and Run All Cells*, check every test cell prints ✔, save, and hand in this
# notebook (`nbgrader` users: *Assignments → Submit*).
