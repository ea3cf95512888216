# %% [markdown]
# # Homework 3 · First-Order MAML (6 points)
#
# **In this assignment you will**
# - compute the First-Order MAML meta-gradient of one task: the query gradient at $\theta'$, no Hessian term;
# - take one FOMAML outer update after several inner steps.
#
# **Prerequisites:** homework 2, notebook 05_first_order_maml.
#
# **How this is graded.** Write your code where it says `# YOUR CODE HERE` (delete the
# `raise NotImplementedError()` line), then run the test cell below it: it prints one line, ✔ or ✘
# with a hint. Hidden tests run the same cells with other inputs when your work is graded: a ✔ is
# necessary, not sufficient. Do not rename the functions or change their arguments; do not edit the
# other cells. Before you submit: *Kernel → Restart Kernel and Run All Cells*.

# %%
import torch
import torch.nn.functional as F

from mamlkit import maml
from mamlkit.course import checks, homework
from mamlkit.course.notebook import setup_notebook
from mamlkit.params import forward

device = setup_notebook(seed=0)

# %% [markdown]
# ## 3.1 The first-order meta-gradient of one task (3 points)
#
# MAML's meta-gradient of one task after one inner step is
# $(I - \alpha H_{\text{support}})\, \nabla_{\theta'} \mathcal{L}_{\text{query}}(\theta')$. First-Order MAML drops
# $\alpha H$: treat the inner gradient as a constant and return
#
# $$g_i = \nabla_{\theta'} \mathcal{L}_{\text{query}}(\theta'), \qquad
# \theta' = \theta - \alpha \nabla_\theta \mathcal{L}_{\text{support}}(\theta),$$
#
# as a dict name → tensor (the same names as `params`).

# %% answer id=first_order_gradient
def first_order_gradient(model, params, task, loss_fn, inner_lr):
    """∇_θ′ L_query(θ′) after one inner step on the support set, no Hessian term."""
    ### BEGIN SOLUTION
    loss = loss_fn(forward(model, params, task.x_support), task.y_support)
    grads = torch.autograd.grad(loss, list(params.values()))
    adapted = {name: (p - inner_lr * g).detach().requires_grad_() for (name, p), g in zip(params.items(), grads)}
    query = loss_fn(forward(model, adapted, task.x_query), task.y_query)
    return dict(zip(adapted, torch.autograd.grad(query, list(adapted.values()))))
    ### END SOLUTION


# %% tests id=test_first_order_gradient points=3
assert checks.check_first_order(first_order_gradient)
### BEGIN HIDDEN TESTS
def _hidden_first_order_gradient():
    from mamlkit import params as P

    model, theta, batch = checks.setup(seed=6, hidden=9, tasks=3, shots=4, queries=8)
    for task in batch:
        mine = first_order_gradient(model, theta, task, F.mse_loss, 0.3)
        loss = maml.maml_loss(model, theta, [task], F.mse_loss, 0.3, first_order=True)
        expected = torch.autograd.grad(loss, list(theta.values()))
        torch.testing.assert_close(P.flatten({k: mine[k] for k in theta}).detach(),
                                   torch.cat([g.reshape(-1) for g in expected]))


_hidden_first_order_gradient()
### END HIDDEN TESTS

# %% [markdown]
# ## 3.2 One FOMAML outer update (3 points)
#
# Adapt to each task with `inner_steps` **first-order** inner steps (no graph:
# `maml.adapt(..., first_order=True)` or your own loop with `.detach()`), take the query gradient at
# each $\theta'_i$, and step:
#
# $$\theta \leftarrow \theta - \beta\, \frac1n \sum_i \nabla_{\theta'_i} \mathcal{L}_{\text{query}}(\theta'_i).$$
#
# Return a **new** dict of detached tensors; do not modify `params`. This costs the memory of one
# inner step whatever `inner_steps` is: that is why FOMAML scales.

# %% answer id=fomaml_update
def fomaml_update(model, params, tasks, loss_fn, inner_lr, inner_steps, outer_lr):
    """θ − β mean_i ∇_θ′ L_query(θ′_i), θ′_i after ``inner_steps`` first-order steps."""
    ### BEGIN SOLUTION
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for task in tasks:
        adapted = maml.adapt(model, params, task.x_support, task.y_support, loss_fn, inner_lr, inner_steps,
                             first_order=True)
        adapted = {name: p.detach().requires_grad_() for name, p in adapted.items()}
        query = loss_fn(forward(model, adapted, task.x_query), task.y_query)
        for name, g in zip(adapted, torch.autograd.grad(query, list(adapted.values()))):
            total[name] += g / len(tasks)
    return {name: (p - outer_lr * total[name]).detach() for name, p in params.items()}
    ### END SOLUTION


# %% tests id=test_fomaml_update points=3
assert homework.check_fomaml_update(fomaml_update)
### BEGIN HIDDEN TESTS
def _hidden_fomaml_update():
    from mamlkit import params as P
    from mamlkit.inner import InnerLoop

    model, theta, batch = checks.setup(seed=7, hidden=12, tasks=4, shots=5, queries=5)
    for steps in (1, 4):
        mine = fomaml_update(model, theta, batch, F.mse_loss, 0.02, steps, 0.5)
        copy = P.detach(theta, requires_grad=True)  # the library's FOMAML step with plain SGD
        inner = InnerLoop.sgd(0.02, steps,
                              first_order=True)
        maml.maml_step(model, copy, torch.optim.SGD(copy.values(), lr=0.5), batch, F.mse_loss, inner)
        torch.testing.assert_close(P.flatten({k: mine[k] for k in theta}).detach(), P.flatten(copy).detach())


_hidden_fomaml_update()
### END HIDDEN TESTS

# %% [markdown]
# ## Before you submit
#
# *Kernel → Restart Kernel and Run All Cells*, check every test cell prints ✔, save, and hand in this
# notebook (`nbgrader` users: *Assignments → Submit*).
