# %% [markdown]
# # Homework 3 · What does the first-order approximation lose? (6 points)
#
# First-Order MAML drops the second-order terms of the meta-gradient: it treats every inner gradient as a
# constant and takes the query gradient at $\theta'$. Notebook 05 compares the two by their results; here
# you **measure the gradients themselves**, for several inner steps, and how far apart they are.
#
# **In this assignment you will**
# - compute MAML's and FOMAML's meta-gradients of one task after $k$ inner steps, with your own inner loop;
# - measure the gap between the task-averaged meta-gradients: relative error and cosine similarity.
#
# **Prerequisites:** notebooks 03_outer_update and 05_first_order_maml, homework 2.
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

from mamlkit.course import checks, homework
from mamlkit.course.notebook import setup_notebook
from mamlkit.params import forward

device = setup_notebook(seed=0)

# %% [markdown]
# ## 3.1 Both meta-gradients of one task, k inner steps (3 points)
#
# Adapt to `task` with `inner_steps` SGD steps of `inner_lr` on its support set and return
# `(g_maml, g_fomaml)`, two dicts name → tensor (the names of `params`):
#
# - `g_maml` $= \nabla_\theta \mathcal{L}_{\text{query}}(\theta_k)$ through all $k$ steps (second order: keep
#   the graph);
# - `g_fomaml` $= \nabla_{\theta_k} \mathcal{L}_{\text{query}}(\theta_k)$ with $\theta_k$ from first-order steps (each
#   inner gradient a constant).
#
# Both steps reach the same $\theta_k$; only the gradient differs. Return plain tensors (`.detach()`).

# %% answer id=maml_and_fomaml_gradients
def maml_and_fomaml_gradients(model, params, task, loss_fn, inner_lr, inner_steps):
    """(∇_θ L_query(θ_k) second order, ∇_θk L_query(θ_k) first order), θ_k after k SGD steps on the support set."""
    ### BEGIN SOLUTION
    def adapt(create_graph):
        adapted = params
        for _ in range(inner_steps):
            loss = loss_fn(forward(model, adapted, task.x_support), task.y_support)
            grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=create_graph)
            adapted = {name: p - inner_lr * g for (name, p), g in zip(adapted.items(), grads)}
        return adapted

    second = adapt(create_graph=True)
    query = loss_fn(forward(model, second, task.x_query), task.y_query)
    g_maml = dict(zip(params, torch.autograd.grad(query, list(params.values()))))
    first = {name: p.detach().requires_grad_() for name, p in adapt(create_graph=False).items()}
    query = loss_fn(forward(model, first, task.x_query), task.y_query)
    g_fomaml = dict(zip(params, torch.autograd.grad(query, list(first.values()))))
    return ({k: v.detach() for k, v in g_maml.items()}, {k: v.detach() for k, v in g_fomaml.items()})
    ### END SOLUTION


# %% tests id=test_maml_and_fomaml_gradients points=3
assert homework.check_maml_and_fomaml_gradients(maml_and_fomaml_gradients)
### BEGIN HIDDEN TESTS
def _hidden_maml_and_fomaml_gradients():
    from mamlkit import maml
    from mamlkit import params as P

    model, theta, batch = checks.setup(seed=6, hidden=9, tasks=2, shots=4, queries=8)
    for task, steps in zip(batch, (1, 4)):
        mine = homework.on_its_own(maml_and_fomaml_gradients)(model, theta, task, F.l1_loss, 0.05, steps)
        for got, first_order in zip(mine, (False, True)):
            loss = maml.maml_loss(model, theta, [task], F.l1_loss, 0.05, steps, first_order=first_order)
            expected = torch.autograd.grad(loss, list(theta.values()))
            torch.testing.assert_close(P.flatten({k: got[k] for k in theta}).detach(),
                                       torch.cat([g.reshape(-1) for g in expected]))


_hidden_maml_and_fomaml_gradients()
### END HIDDEN TESTS

# %% [markdown]
# ## 3.2 The gap, measured (3 points)
#
# Average each meta-gradient over the tasks of the batch (your 3.1), flatten all parameters into one
# vector ($\bar g_{\text{MAML}}$, $\bar g_{\text{FO}}$), and return two Python floats:
#
# $$\text{relative error}
# = \frac{\lVert \bar g_{\text{MAML}} - \bar g_{\text{FO}} \rVert}{\lVert \bar g_{\text{MAML}} \rVert},
# \qquad \text{cosine} = \frac{\bar g_{\text{MAML}} \cdot \bar g_{\text{FO}}}{\lVert \bar g_{\text{MAML}} \rVert\,
# \lVert \bar g_{\text{FO}} \rVert}.$$
#
# (For one step the difference is $-\alpha H\, \nabla \mathcal{L}_{\text{query}}(\theta')$: try a few `inner_lr` and
# `inner_steps` afterwards and see how the gap grows.)

# %% answer id=first_order_gap
def first_order_gap(model, params, tasks, loss_fn, inner_lr, inner_steps):
    """(‖ḡ_MAML − ḡ_FO‖ / ‖ḡ_MAML‖, cos(ḡ_MAML, ḡ_FO)) of the task-averaged, flattened meta-gradients."""
    ### BEGIN SOLUTION
    sums = [0.0, 0.0]
    for task in tasks:
        for i, g in enumerate(maml_and_fomaml_gradients(model, params, task, loss_fn, inner_lr, inner_steps)):
            sums[i] = sums[i] + torch.cat([g[k].reshape(-1) for k in params]) / len(tasks)
    g_maml, g_fo = sums
    relative = (g_maml - g_fo).norm() / g_maml.norm()
    cosine = g_maml @ g_fo / (g_maml.norm() * g_fo.norm())
    return float(relative), float(cosine)
    ### END SOLUTION


# %% tests id=test_first_order_gap points=3
assert homework.check_first_order_gap(first_order_gap)
### BEGIN HIDDEN TESTS
def _hidden_first_order_gap():
    from mamlkit import maml

    model, theta, batch = checks.setup(seed=8, hidden=10, tasks=4, shots=5, queries=6)
    for lr, steps in ((0.02, 1), (0.1, 3)):
        relative, cosine = homework.on_its_own(first_order_gap)(model, theta, batch, F.mse_loss, lr, steps)
        g_maml, g_fo, expected_cosine = maml.gradient_agreement(model, theta, batch, lr, steps)
        torch.testing.assert_close(torch.tensor([relative, cosine], dtype=torch.float64),
                                   torch.stack([(g_maml - g_fo).norm() / g_maml.norm(),
                                                torch.tensor(expected_cosine, dtype=torch.float64)]))


_hidden_first_order_gap()
### END HIDDEN TESTS

# %% [markdown]
# ## Before you submit
#
# *Kernel → Restart Kernel and Run All Cells*, check every test cell prints ✔, save, and hand in this
# notebook (`nbgrader` users: *Assignments → Submit*).
