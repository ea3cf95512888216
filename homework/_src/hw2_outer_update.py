# %% [markdown]
# # Homework 2 · The outer update and the meta-gradient (8 points)
#
# **In this assignment you will**
# - compute the one-step meta-gradient of a linear model in closed form, Hessian term included;
# - write the meta-loss, the mean query loss over tasks after adaptation;
# - take one outer update
#   $\theta \leftarrow \theta - \beta \nabla_\theta \frac1n \sum_i \mathcal{L}(\theta'_i, \mathcal{T}_i)$.
#
# **Prerequisites:** homework 1, notebook 03_outer_update.
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
# ## 2.1 The meta-gradient of a linear model, by hand (3 points)
#
# A linear model $f_w(x) = x w$ with the mean squared error
# $\mathcal{L}(w) = \frac1n \lVert x w - y \rVert^2$ has the gradient
# $\nabla \mathcal{L}(w) = \frac2n x^\top (x w - y)$ and the constant Hessian $H = \frac2n x^\top x$.
# After one inner step $w' = w - \alpha \nabla \mathcal{L}_{\text{support}}(w)$, the meta-gradient is
#
# $$\nabla_w \mathcal{L}_{\text{query}}(w') = (I - \alpha H_{\text{support}})\, \nabla \mathcal{L}_{\text{query}}(w').$$
#
# Return it as a tensor of the shape of `w` (`x_*` have shape `(n, d)`, `y_*` and `w` shape `(n,)`
# and `(d,)`). No autograd: matrix products only.

# %% answer id=meta_gradient_linear
def meta_gradient_linear(x_support, y_support, x_query, y_query, w, inner_lr):
    """(I − α H_support) ∇L_query(w′), w′ = w − α ∇L_support(w), for L(w) = mean((x w − y)²)."""
    ### BEGIN SOLUTION
    def grad(x, y, v):
        return 2 / len(x) * x.T @ (x @ v - y)

    hessian = 2 / len(x_support) * x_support.T @ x_support
    adapted = w - inner_lr * grad(x_support, y_support, w)
    identity = torch.eye(len(w), dtype=w.dtype)
    return (identity - inner_lr * hessian) @ grad(x_query, y_query, adapted)
    ### END SOLUTION


# %% tests id=test_meta_gradient_linear points=3
assert checks.check_meta_gradient_linear(meta_gradient_linear)
### BEGIN HIDDEN TESTS
def _hidden_meta_gradient_linear():
    g = torch.Generator().manual_seed(7)
    x_s, x_q = torch.randn(9, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    y_s, y_q = torch.randn(9, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    w = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    for lr in (0.01, 0.4):  # autograd through the inner step is the reference
        grad_s = torch.autograd.grad(((x_s @ w - y_s) ** 2).mean(), w, create_graph=True)[0]
        query = ((x_q @ (w - lr * grad_s) - y_q) ** 2).mean()
        expected = torch.autograd.grad(query, w)[0]
        torch.testing.assert_close(meta_gradient_linear(x_s, y_s, x_q, y_q, w.detach(), lr), expected)


_hidden_meta_gradient_linear()
### END HIDDEN TESTS

# %% [markdown]
# ## 2.2 The meta-loss (2 points)
#
# For a batch of tasks (`for task in tasks` gives one `Task` with `x_support, y_support, x_query,
# y_query`), adapt with **one** second-order inner step on each support set, evaluate the loss on
# the query set at $\theta'_i$, and return the mean over tasks: $\frac1n \sum_i \mathcal{L}(\theta'_i, \mathcal{T}_i)$,
# a 0-d tensor whose gradient is the meta-gradient. `maml.inner_update(model, params, x, y, loss_fn, inner_lr)`
# is the library's inner step (you wrote it in homework 1).

# %% answer id=meta_loss
def meta_loss(model, params, tasks, loss_fn, inner_lr):
    """mean_i L_query(θ′_i) with θ′_i one second-order inner step on task i's support set."""
    ### BEGIN SOLUTION
    losses = []
    for task in tasks:
        adapted = maml.inner_update(model, params, task.x_support, task.y_support, loss_fn, inner_lr)
        losses.append(loss_fn(forward(model, adapted, task.x_query), task.y_query))
    return torch.stack(losses).mean()
    ### END SOLUTION


# %% tests id=test_meta_loss points=2
assert checks.check_meta_loss(meta_loss)
### BEGIN HIDDEN TESTS
def _hidden_meta_loss():
    from mamlkit import params as P

    torch.manual_seed(4)
    model = models.MLP((1, 10, 1), init="torch").double()
    theta = P.detach(P.get_params(model), requires_grad=True)
    batch = tasks.sample_sine_tasks(5, 3, 4, torch.Generator().manual_seed(4), dtype=torch.float64)
    mine = meta_loss(model, theta, batch, F.l1_loss, 0.2)
    ref = maml.maml_loss(model, theta, batch, F.l1_loss, 0.2)
    torch.testing.assert_close(mine, ref)
    grads = [torch.autograd.grad(v, list(theta.values())) for v in (mine, ref)]
    torch.testing.assert_close(grads[0], grads[1])


_hidden_meta_loss()
### END HIDDEN TESTS

# %% [markdown]
# ## 2.3 One outer update (3 points)
#
# One plain gradient step on the meta-loss of 2.2:
#
# $$\theta \leftarrow \theta - \beta\, \nabla_\theta \frac1n \sum_i \mathcal{L}(\theta'_i, \mathcal{T}_i).$$
#
# Return the new parameters as a **new** dict of plain tensors (cut from the graph with `.detach()`);
# do not modify `params`. Use your `meta_loss` and `torch.autograd.grad`.

# %% answer id=outer_update
def outer_update(model, params, tasks, loss_fn, inner_lr, outer_lr):
    """θ − β ∇_θ meta_loss(θ), second order, as a new detached dict."""
    ### BEGIN SOLUTION
    grads = torch.autograd.grad(meta_loss(model, params, tasks, loss_fn, inner_lr), list(params.values()))
    return {name: (p - outer_lr * g).detach() for (name, p), g in zip(params.items(), grads)}
    ### END SOLUTION


# %% tests id=test_outer_update points=3
assert homework.check_outer_update(outer_update)
### BEGIN HIDDEN TESTS
def _hidden_outer_update():
    from mamlkit import params as P

    model, theta, batch = checks.setup(seed=5, hidden=12, tasks=4, shots=5, queries=5)
    mine = outer_update(model, theta, batch, F.mse_loss, 0.05, 0.1)
    copy = P.detach(theta, requires_grad=True)  # the library's outer step with plain SGD
    maml.maml_step(model, copy, torch.optim.SGD(copy.values(), lr=0.1), batch, F.mse_loss, 0.05)
    torch.testing.assert_close(P.flatten({k: mine[k] for k in theta}).detach(), P.flatten(copy).detach())


_hidden_outer_update()
### END HIDDEN TESTS

# %% [markdown]
# ## Before you submit
#
# *Kernel → Restart Kernel and Run All Cells*, check every test cell prints ✔, save, and hand in this
# notebook (`nbgrader` users: *Assignments → Submit*).
