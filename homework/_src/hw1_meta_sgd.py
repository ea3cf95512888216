# %% [markdown]
# # Homework 1 · Meta-SGD: a learned step size per parameter (8 points)
#
# MAML adapts with one step size $\alpha$ for every weight. **Meta-SGD** (Li et al. 2017) learns a step
# size *per parameter element*, a tensor $\alpha$ of the shape of $\theta$, together with $\theta$ in the
# outer loop:
#
# $$\theta' = \theta - \alpha \odot \nabla_\theta \mathcal{L}_{\text{support}}(\theta), \qquad
# (\theta, \alpha) \leftarrow (\theta, \alpha) - \beta\, \nabla_{(\theta, \alpha)}
# \tfrac1n \textstyle\sum_i \mathcal{L}_{\text{query}}(\theta'_i),$$
#
# where $\odot$ multiplies element by element.
#
# **In this assignment you will**
# - write Meta-SGD's inner update on a parameter dict, differentiable in $\theta$ *and* $\alpha$;
# - derive and compute the meta-gradient with respect to $\alpha$ by hand (two plain gradients);
# - take one outer step that learns $\theta$ and $\alpha$ together.
#
# **Prerequisites:** notebooks 02_inner_update and 03_outer_update (you wrote MAML's inner update there).
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
# ## 1.1 Meta-SGD's inner update (3 points)
#
# `params` and `alphas` are dicts with the same names and shapes (`alphas[name]` is the step size of
# every element of `params[name]`). On the support set $(x, y)$ return the **new** dict
#
# $$\theta' = \theta - \alpha \odot \nabla_\theta \mathcal{L}(\theta), \qquad
# \mathcal{L}(\theta) = \texttt{loss\_fn}(f_\theta(x), y),$$
#
# without modifying `params`. The outer loop differentiates $\theta'$ with respect to $\theta$ (through the
# gradient: `create_graph=True`) and with respect to $\alpha$ (keep `alphas` in the graph: no `.detach()`).

# %% answer id=meta_sgd_update
def meta_sgd_update(model, params, alphas, x, y, loss_fn):
    """θ' = θ − α ⊙ ∇_θ loss_fn(f_θ(x), y), differentiable in θ (second order) and in α."""
    ### BEGIN SOLUTION
    loss = loss_fn(forward(model, params, x), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    return {name: p - alphas[name] * g for (name, p), g in zip(params.items(), grads)}
    ### END SOLUTION


# %% tests id=test_meta_sgd_update points=3
assert homework.check_meta_sgd_update(meta_sgd_update)
### BEGIN HIDDEN TESTS
def _hidden_meta_sgd_update():
    from mamlkit import maml
    from mamlkit import params as P
    from mamlkit.inner import InnerLoop

    mine_update = homework.on_its_own(meta_sgd_update)
    torch.manual_seed(1)
    model = models.MLP((3, 6, 4), init="torch").double()  # a classifier: loss_fn must be used, not MSE
    theta = P.detach(P.get_params(model), requires_grad=True)
    alphas = {k: (0.05 + 0.2 * torch.rand_like(v)).requires_grad_() for k, v in theta.items()}
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 4, (8,))
    before = P.flatten(theta).detach().clone()
    mine = mine_update(model, theta, alphas, x, y, F.cross_entropy)
    ref = InnerLoop.sgd(alphas).adapt(model, F.cross_entropy, theta, x, y)[0]
    assert set(mine) == set(theta), "the result must have the same names as params"
    torch.testing.assert_close(P.flatten({k: mine[k] for k in theta}), P.flatten(ref))
    assert torch.equal(P.flatten(theta).detach(), before), "params was modified in place"
    leaves = [*theta.values(), *alphas.values()]  # the meta-gradient w.r.t. θ and α
    meta = [F.cross_entropy(forward(model, a, x[:4]), y[:4]) for a in (mine, ref)]
    grads = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(m, leaves)]) for m in meta]
    torch.testing.assert_close(grads[0], grads[1])
    # α frozen at one number: Meta-SGD's step is MAML's
    same = mine_update(model, theta, {k: torch.full_like(v, 0.3) for k, v in theta.items()}, x, y, F.cross_entropy)
    torch.testing.assert_close(P.flatten({k: same[k] for k in theta}),
                               P.flatten(maml.inner_update(model, theta, x, y, F.cross_entropy, 0.3)))


_hidden_meta_sgd_update()
### END HIDDEN TESTS

# %% [markdown]
# ## 1.2 The meta-gradient with respect to α, by hand (3 points)
#
# $\theta'$ depends on $\alpha$ only through $-\alpha \odot g$,
# $g = \nabla_\theta \mathcal{L}_{\text{support}}(\theta)$, element by element,
# and $g$ does not depend on $\alpha$. The chain rule gives
#
# $$\frac{\partial \mathcal{L}_{\text{query}}(\theta')}{\partial \alpha}
# = -\,\nabla_\theta \mathcal{L}_{\text{support}}(\theta) \odot \nabla_{\theta'} \mathcal{L}_{\text{query}}(\theta').$$
#
# Compute it from these **two plain gradients** (the support gradient at $\theta$, the query gradient at
# $\theta'$; no `create_graph`, no differentiating through the step) and return a dict name → tensor of
# the shapes of `alphas`. The visible check compares with autograd through the step, the hidden tests
# with finite differences.

# %% answer id=alpha_meta_gradient
def alpha_meta_gradient(model, params, alphas, task, loss_fn):
    """∂ L_query(θ′)/∂α = −∇_θ L_support(θ) ⊙ ∇_θ′ L_query(θ′), θ′ = θ − α ⊙ ∇_θ L_support(θ)."""
    ### BEGIN SOLUTION
    support = loss_fn(forward(model, params, task.x_support), task.y_support)
    g_support = torch.autograd.grad(support, list(params.values()))
    adapted = {name: (p - alphas[name] * g).detach().requires_grad_()
               for (name, p), g in zip(params.items(), g_support)}
    query = loss_fn(forward(model, adapted, task.x_query), task.y_query)
    g_query = torch.autograd.grad(query, list(adapted.values()))
    return {name: (-gs * gq).detach() for name, gs, gq in zip(params, g_support, g_query)}
    ### END SOLUTION


# %% tests id=test_alpha_meta_gradient points=3
assert homework.check_alpha_meta_gradient(alpha_meta_gradient)
### BEGIN HIDDEN TESTS
def _hidden_alpha_meta_gradient():
    from mamlkit import params as P

    mine_gradient = homework.on_its_own(alpha_meta_gradient)
    torch.manual_seed(2)
    model = models.MLP((1, 5, 5, 1), init="torch").double()
    theta = P.detach(P.get_params(model), requires_grad=True)
    alphas = {k: 0.02 + 0.1 * torch.rand_like(v) for k, v in theta.items()}
    task = tasks.sample_sine_tasks(1, 6, 9, torch.Generator().manual_seed(2), dtype=torch.float64)[0]
    mine = mine_gradient(model, theta, alphas, task, F.mse_loss)
    assert set(mine) == set(alphas) and all(mine[k].shape == v.shape for k, v in alphas.items())

    def query_loss(a):  # L_query(θ − α ⊙ ∇L_support(θ)), float64, for central differences
        g = torch.autograd.grad(F.mse_loss(forward(model, theta, task.x_support), task.y_support),
                                list(theta.values()))
        adapted = {k: p - a[k] * gk for (k, p), gk in zip(theta.items(), g)}
        return F.mse_loss(forward(model, adapted, task.x_query), task.y_query).item()

    h = 1e-6
    for name in alphas:
        for index in range(0, alphas[name].numel(), 3):
            up = {k: v.clone() for k, v in alphas.items()}
            down = {k: v.clone() for k, v in alphas.items()}
            up[name].view(-1)[index] += h
            down[name].view(-1)[index] -= h
            numeric = (query_loss(up) - query_loss(down)) / (2 * h)
            assert abs(float(mine[name].reshape(-1)[index]) - numeric) <= 1e-6 * (1 + abs(numeric)), (name, index)


_hidden_alpha_meta_gradient()
### END HIDDEN TESTS

# %% [markdown]
# ## 1.3 One Meta-SGD outer step (2 points)
#
# For a batch of tasks (`for task in tasks` gives one `Task` with `x_support, y_support, x_query,
# y_query`): adapt to each task with your `meta_sgd_update`, average the query losses,
# $M = \frac1n \sum_i \mathcal{L}_{\text{query}}(\theta'_i)$, and take one plain gradient step on **both**
# $\theta$ and $\alpha$ with step size $\beta$ (`outer_lr`). Return `(new_params, new_alphas)`, two new dicts
# of detached tensors; do not modify the inputs.

# %% answer id=meta_sgd_outer_step
def meta_sgd_outer_step(model, params, alphas, tasks, loss_fn, outer_lr):
    """(θ − β ∇_θ M, α − β ∇_α M), M = mean_i L_query(θ′_i), θ′_i = meta_sgd_update on task i's support set."""
    ### BEGIN SOLUTION
    losses = []
    for task in tasks:
        adapted = meta_sgd_update(model, params, alphas, task.x_support, task.y_support, loss_fn)
        losses.append(loss_fn(forward(model, adapted, task.x_query), task.y_query))
    names = list(params)
    grads = torch.autograd.grad(torch.stack(losses).mean(), [*params.values(), *alphas.values()])
    new_params = {k: (params[k] - outer_lr * g).detach() for k, g in zip(names, grads[:len(names)])}
    new_alphas = {k: (alphas[k] - outer_lr * g).detach() for k, g in zip(alphas, grads[len(names):])}
    return new_params, new_alphas
    ### END SOLUTION


# %% tests id=test_meta_sgd_outer_step points=2
assert homework.check_meta_sgd_outer_step(meta_sgd_outer_step)
### BEGIN HIDDEN TESTS
def _hidden_meta_sgd_outer_step():
    from mamlkit import params as P
    from mamlkit.course import checks
    from mamlkit.inner import InnerLoop

    model, theta, batch = checks.setup(seed=5, hidden=12, tasks=4, shots=5, queries=5)
    alphas = {k: (0.01 + 0.05 * torch.rand_like(v)).requires_grad_() for k, v in theta.items()}
    new_theta, new_alphas = homework.on_its_own(meta_sgd_outer_step)(model, theta, alphas, batch, F.mse_loss, 0.1)
    loop = InnerLoop.sgd(alphas)  # the library's Meta-SGD inner step is the reference
    losses = [F.mse_loss(forward(model, loop.adapt(model, F.mse_loss, theta, t.x_support, t.y_support)[0],
                                 t.x_query), t.y_query) for t in batch]
    leaves = [*theta.values(), *alphas.values()]
    grads = torch.autograd.grad(torch.stack(losses).mean(), leaves)
    expected = torch.cat([(v - 0.1 * g).reshape(-1) for v, g in zip(leaves, grads)]).detach()
    got = torch.cat([P.flatten({k: new_theta[k] for k in theta}), P.flatten({k: new_alphas[k] for k in alphas})])
    torch.testing.assert_close(got.detach(), expected)


_hidden_meta_sgd_outer_step()
### END HIDDEN TESTS

# %% [markdown]
# ## Before you submit
#
# *Kernel → Restart Kernel and Run All Cells*, check every test cell prints ✔, save, and hand in this
# notebook (`nbgrader` users: *Assignments → Submit*).
