# %% [markdown]
# # Homework 4 · Reptile as in the paper: Adam and mini-batches (5 points)
#
# Notebook 06 ran Reptile with plain SGD steps on the whole support set. The Reptile paper (Nichol et al.
# 2018) adapts each task with **Adam** ($\beta_1 = 0$) on **mini-batches**: inner step $s$ trains on the
# $s$-th block of the (shuffled) support set.
#
# **In this assignment you will**
# - write Adam from scratch, as a functional inner loop on a parameter dict, on mini-batches;
# - take one Reptile outer step with it.
#
# **Prerequisites:** notebook 06_reptile.
#
# **How this is graded.** Write your code where it says `# YOUR CODE HERE` (delete the
# `raise NotImplementedError()` line), then run the test cell below it: it prints one line, ✔ or ✘
# with a hint. Hidden tests run the same cells with other inputs when your work is graded: a ✔ is
# necessary, not sufficient. **Your functions must do the work themselves**: a function that calls the
# library's algorithms (`mamlkit.maml`, `mamlkit.inner`, `mamlkit.reptile`, …) or `torch.optim` gets
# 0 points; use `torch`, `forward` and the other helpers of `mamlkit.params`, and your own functions. Do not
# rename the functions or change their arguments; do not edit the other cells. Before you submit:
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
# ## 4.1 Adam on mini-batches, from scratch (3 points)
#
# Start from `params` with zero moments $m = v = 0$ and take `inner_steps` Adam steps; step $t = 1, 2, \dots$
# uses the gradient $g$ of the loss on examples $(t-1)\,b, \dots, t\,b - 1$ of `(x, y)`, $b$ = `inner_batch`
# (all of `(x, y)` when `inner_batch` is `None`):
#
# $$m \leftarrow \beta_1 m + (1 - \beta_1)\, g, \quad v \leftarrow \beta_2 v + (1 - \beta_2)\, g^2, \quad
# \theta \leftarrow \theta - \text{lr}\, \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon},$$
#
# element by element, per parameter (this is `torch.optim.Adam`). Return the adapted parameters $\phi$ as a
# new dict of detached tensors (Reptile never differentiates through the inner loop).

# %% answer id=adam_adapt
def adam_adapt(model, params, x, y, loss_fn, lr, inner_steps, inner_batch=None, betas=(0.0, 0.999), eps=1e-8):
    """φ after ``inner_steps`` Adam steps from zero moments, step t on examples (t−1)b … tb−1 of (x, y)."""
    ### BEGIN SOLUTION
    (b1, b2), b = betas, inner_batch
    phi = {name: p.detach() for name, p in params.items()}
    m = {name: torch.zeros_like(p) for name, p in phi.items()}
    v = {name: torch.zeros_like(p) for name, p in phi.items()}
    for t in range(1, inner_steps + 1):
        xb, yb = (x, y) if b is None else (x[(t - 1) * b: t * b], y[(t - 1) * b: t * b])
        phi = {name: p.requires_grad_() for name, p in phi.items()}
        grads = torch.autograd.grad(loss_fn(forward(model, phi, xb), yb), list(phi.values()))
        new = {}
        for (name, p), g in zip(phi.items(), grads):
            m[name] = b1 * m[name] + (1 - b1) * g
            v[name] = b2 * v[name] + (1 - b2) * g * g
            step = (m[name] / (1 - b1 ** t)) / ((v[name] / (1 - b2 ** t)).sqrt() + eps)
            new[name] = (p - lr * step).detach()
        phi = new
    return phi
    ### END SOLUTION


# %% tests id=test_adam_adapt points=3
assert homework.check_adam_adapt(adam_adapt)
### BEGIN HIDDEN TESTS
def _hidden_adam_adapt():
    from mamlkit import params as P
    from mamlkit.inner import Adam, InnerLoop

    mine_adapt = homework.on_its_own(adam_adapt, also=("torch.optim",))
    torch.manual_seed(3)
    model = models.MLP((2, 7, 3), init="torch").double()  # a classifier: loss_fn must be used
    theta = P.detach(P.get_params(model))
    x, y = torch.randn(12, 2, dtype=torch.float64), torch.randint(0, 3, (12,))
    for batch, steps, betas in ((None, 3, (0.0, 0.999)), (4, 3, (0.9, 0.99)), (3, 4, (0.5, 0.9))):
        mine = mine_adapt(model, theta, x, y, F.cross_entropy, 0.01, steps, batch, betas, 1e-6)
        # the library's Adam equals torch.optim.Adam to the last bit (tests/test_inner.py)
        loop = InnerLoop(Adam(0.01, betas, 1e-6), steps, first_order=True, batch=batch)
        copy = loop.adapt(model, F.cross_entropy, theta, x, y, graph=False)[0]
        torch.testing.assert_close(P.flatten({k: mine[k] for k in theta}).detach(), P.flatten(copy).detach())


_hidden_adam_adapt()
### END HIDDEN TESTS

# %% [markdown]
# ## 4.2 One Reptile outer step (2 points)
#
# For each task of the batch, adapt from $\theta$ with your `adam_adapt` on its support set
# (`inner_steps` steps of `inner_batch` examples, **fresh** moments for every task) to get $\phi_i$; then
# return the new dict $\theta + \varepsilon\,(\frac1n \sum_i \phi_i - \theta)$, $\varepsilon$ = `outer_lr`,
# detached, without modifying `params`.

# %% answer id=reptile_step
def reptile_step(model, params, tasks, loss_fn, inner_lr, inner_steps, inner_batch, outer_lr):
    """θ + ε (mean_i φ_i − θ), φ_i = adam_adapt on task i's support set."""
    ### BEGIN SOLUTION
    phis = [adam_adapt(model, params, task.x_support, task.y_support, loss_fn, inner_lr, inner_steps, inner_batch)
            for task in tasks]
    return {name: (p + outer_lr * (torch.stack([phi[name] for phi in phis]).mean(0) - p)).detach()
            for name, p in params.items()}
    ### END SOLUTION


# %% tests id=test_reptile_step points=2
assert homework.check_reptile_adam_step(reptile_step)
### BEGIN HIDDEN TESTS
def _hidden_reptile_step():
    from mamlkit import params as P
    from mamlkit import reptile
    from mamlkit.inner import Adam, InnerLoop

    torch.manual_seed(9)
    model = models.MLP((1, 10, 10, 1), init="torch").double()
    theta = P.detach(P.get_params(model))
    batch = tasks.sample_sine_tasks(5, 8, 2, torch.Generator().manual_seed(9), dtype=torch.float64)
    mine_step = homework.on_its_own(reptile_step, also=("torch.optim",))
    for steps, size, eps in ((4, 2, 0.7), (2, None, 0.1)):
        mine = mine_step(model, theta, batch, F.mse_loss, 0.02, steps, size, eps)
        loop = InnerLoop(Adam(0.02), steps, first_order=True, batch=size)  # the library's Reptile inner loop
        torch.testing.assert_close(P.flatten({k: mine[k] for k in theta}).detach(),
                                   P.flatten(reptile.reptile_step(model, theta, batch, F.mse_loss, loop,
                                                                  outer_lr=eps)))


_hidden_reptile_step()
### END HIDDEN TESTS

# %% [markdown]
# ## Before you submit
#
# *Kernel → Restart Kernel and Run All Cells*, check every test cell prints ✔, save, and hand in this
# notebook (`nbgrader` users: *Assignments → Submit*).
