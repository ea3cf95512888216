# %% [markdown]
# # Homework 2 · The meta-gradient through several inner steps (8 points)
#
# Notebook 03 derived MAML's meta-gradient for **one** inner step. MAML is usually run with several,
# and MAML++ (Antoniou et al. 2019) trains on the query loss after **every** step (the multi-step loss),
# which is one of the remedies for the divergence notebook 04 shows.
#
# **In this assignment you will**
# - derive and compute the meta-gradient of a linear model through $k$ inner steps, in closed form;
# - write MAML++'s multi-step loss $\sum_j v_j \mathcal{L}_{\text{query}}(\theta_j)$, second order.
#
# **Prerequisites:** notebook 03_outer_update (the one-step meta-gradient), homework 1.
#
# **How this is graded.** Write your code where it says `# YOUR CODE HERE` (delete the
# `raise NotImplementedError()` line), then run the test cell below it: it prints one line, ✔ or ✘
# with a hint. Hidden tests run the same cells with other inputs when your work is graded: a ✔ is
# necessary, not sufficient. **Your functions must do the work themselves**: a function that calls the
# library's algorithms (`mamlkit.maml`, `mamlkit.inner`, `mamlkit.reptile`, …) gets 0 points; use
# `torch`, `forward` and the other helpers of `mamlkit.params`, and your own functions. Do not rename
# the functions or change their arguments; do not edit the other cells. Before you submit:
# *Kernel → Restart Kernel and Run All Cells*.

# %%
import torch
import torch.nn.functional as F

from mamlkit import models, tasks
from mamlkit.course import homework
from mamlkit.course.notebook import setup_notebook
from mamlkit.params import forward

device = setup_notebook(seed=0)

# %% [markdown]
# ## 2.1 The k-step meta-gradient of a linear model, by hand (4 points)
#
# A linear model $f_w(x) = x w$ with the mean squared error $\mathcal{L}(w) = \frac1n \lVert x w - y \rVert^2$
# has the gradient $\nabla \mathcal{L}(w) = \frac2n x^\top (x w - y)$ and the constant Hessian
# $H = \frac2n x^\top x$. Take $k$ inner steps on the support set,
# $w_{j+1} = w_j - \alpha \nabla \mathcal{L}_{\text{support}}(w_j)$, $w_0 = w$. Each step has the Jacobian
# $\partial w_{j+1} / \partial w_j = I - \alpha H_{\text{support}}$ (the same matrix every step: why?), so
#
# $$\nabla_w \mathcal{L}_{\text{query}}(w_k)
# = (I - \alpha H_{\text{support}})^k\, \nabla \mathcal{L}_{\text{query}}(w_k).$$
#
# Return it as a tensor of the shape of `w` (`x_*` have shape `(n, d)`, `y_*` shape `(n,)`, `w` shape
# `(d,)`). No autograd: matrix products only (`torch.linalg.matrix_power` may help). With
# `inner_steps = 0` it is the plain query gradient at $w$.

# %% answer id=meta_gradient_linear
def meta_gradient_linear(x_support, y_support, x_query, y_query, w, inner_lr, inner_steps):
    """(I − α H_support)^k ∇L_query(w_k), w_k after k gradient steps on L_support, L(w) = mean((x w − y)²)."""
    ### BEGIN SOLUTION
    def grad(x, y, v):
        return 2 / len(x) * x.T @ (x @ v - y)

    hessian = 2 / len(x_support) * x_support.T @ x_support
    adapted = w
    for _ in range(inner_steps):
        adapted = adapted - inner_lr * grad(x_support, y_support, adapted)
    jacobian = torch.linalg.matrix_power(torch.eye(len(w), dtype=w.dtype) - inner_lr * hessian, inner_steps)
    return jacobian @ grad(x_query, y_query, adapted)
    ### END SOLUTION


# %% tests id=test_meta_gradient_linear points=4
assert homework.check_meta_gradient_linear_steps(meta_gradient_linear)
### BEGIN HIDDEN TESTS
def _hidden_meta_gradient_linear():
    mine_gradient = homework.on_its_own(meta_gradient_linear)
    g = torch.Generator().manual_seed(7)
    x_s, x_q = torch.randn(9, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    y_s, y_q = torch.randn(9, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    w = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    for lr, steps in ((0.05, 0), (0.01, 1), (0.1, 4), (0.3, 2)):  # autograd through the k steps is the reference
        adapted = w
        for _ in range(steps):
            adapted = adapted - lr * torch.autograd.grad(((x_s @ adapted - y_s) ** 2).mean(), adapted,
                                                         create_graph=True)[0]
        expected = torch.autograd.grad(((x_q @ adapted - y_q) ** 2).mean(), w)[0]
        torch.testing.assert_close(mine_gradient(x_s, y_s, x_q, y_q, w.detach(), lr, steps), expected)


_hidden_meta_gradient_linear()
### END HIDDEN TESTS

# %% [markdown]
# ## 2.2 MAML++'s multi-step loss (4 points)
#
# For each task, take $k$ = `len(weights)` second-order SGD steps of `inner_lr` on its support set,
# $\theta_1, \dots, \theta_k$, and weight the query loss after **each** step:
#
# $$\mathcal{M}(\theta) = \frac1n \sum_{i=1}^n \sum_{j=1}^{k} v_j\, \mathcal{L}_{\text{query},i}(\theta_{i,j}),$$
#
# with $v_j$ = `weights[j - 1]` (MAML++ starts from equal weights and anneals them toward the last step;
# `weights = [0, …, 0, 1]` is plain MAML with $k$ steps). Return $\mathcal{M}$ as a 0-d tensor whose
# gradient with respect to `params` is the meta-gradient: keep the graph of every step
# (`create_graph=True`). Write the inner steps yourself.

# %% answer id=multi_step_loss
def multi_step_loss(model, params, tasks, loss_fn, inner_lr, weights):
    """mean over tasks of sum_j weights[j-1] L_query(θ_j), θ_j after j second-order SGD steps on the support set."""
    ### BEGIN SOLUTION
    total = 0.0
    for task in tasks:
        adapted = params
        for v in weights:
            loss = loss_fn(forward(model, adapted, task.x_support), task.y_support)
            grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=True)
            adapted = {name: p - inner_lr * g for (name, p), g in zip(adapted.items(), grads)}
            total = total + v * loss_fn(forward(model, adapted, task.x_query), task.y_query)
    return total / len(tasks)
    ### END SOLUTION


# %% tests id=test_multi_step_loss points=4
assert homework.check_multi_step_loss(multi_step_loss)
### BEGIN HIDDEN TESTS
def _hidden_multi_step_loss():
    from mamlkit import maml
    from mamlkit import params as P

    mine_loss = homework.on_its_own(multi_step_loss)
    torch.manual_seed(4)
    model = models.MLP((1, 10, 1), init="torch").double()
    theta = P.detach(P.get_params(model), requires_grad=True)
    batch = tasks.sample_sine_tasks(5, 3, 4, torch.Generator().manual_seed(4), dtype=torch.float64)
    leaves = list(theta.values())
    # the last step alone is MAML with k steps (another loss, to make sure loss_fn is used)
    mine, ref = mine_loss(model, theta, batch, F.l1_loss, 0.2, [0.0, 0.0, 1.0]), \
        maml.maml_loss(model, theta, batch, F.l1_loss, 0.2, 3)
    torch.testing.assert_close(mine, ref)
    torch.testing.assert_close(torch.autograd.grad(mine, leaves), torch.autograd.grad(ref, leaves))
    # weights (v1, v2) are v1 × (MAML, 1 step) + v2 × (MAML, 2 steps)
    mine = mine_loss(model, theta, batch, F.mse_loss, 0.1, [0.3, 0.7])
    ref = 0.3 * maml.maml_loss(model, theta, batch, F.mse_loss, 0.1, 1) + \
        0.7 * maml.maml_loss(model, theta, batch, F.mse_loss, 0.1, 2)
    torch.testing.assert_close(mine, ref)
    torch.testing.assert_close(torch.autograd.grad(mine, leaves), torch.autograd.grad(ref, leaves))


_hidden_multi_step_loss()
### END HIDDEN TESTS

# %% [markdown]
# ## Before you submit
#
# *Kernel → Restart Kernel and Run All Cells*, check every test cell prints ✔, save, and hand in this
# notebook (`nbgrader` users: *Assignments → Submit*).
