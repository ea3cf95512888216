# %% [markdown]
# # 03 · The outer update: a gradient through the inner step
#
# **In this notebook you will**
# - state the meta-objective of MAML and its outer update (the *general-performance* loop of TAG);
# - derive, for one inner step, the meta-gradient $(I - \alpha H)\,\nabla \mathcal{L}_{\text{query}}(\theta')$
#   with its second-order (Hessian) term;
# - compute it three ways for a linear model (closed form, autograd via `maml.maml_loss`, finite
#   differences in float64) and check that they agree;
# - see what First-Order MAML drops, and take real outer steps.
#
# **Prerequisites:** notebook 02 (the inner update), the chain rule.

# %%
import torch
import torch.nn.functional as F
from torch import nn

from mamlkit import maml, models, params, tasks
from mamlkit.course import checks, widgets
from mamlkit.course.notebook import setup_notebook

device = setup_notebook(seed=0)

# %% [markdown]
# ## 1. The meta-objective
#
# The inner loop adapts to each task: $\theta'_i = \theta - \alpha \nabla_\theta \mathcal{L}_{\text{support}}(\theta, \mathcal{T}_i)$.
# The outer loop asks: *which starting point $\theta$ makes these adapted models good on their query sets?*
#
# $$\min_\theta \sum_i \mathcal{L}_{\text{query}}(\theta'_i, \mathcal{T}_i), \qquad
# \theta \leftarrow \theta - \beta \nabla_\theta \sum_i \mathcal{L}(\theta'_i, \mathcal{T}_i).$$
#
# `maml.maml_loss` computes this loss (as a **mean** over the tasks of the meta-batch, which only
# rescales $\beta$ by $1/n$ and keeps it independent of the meta-batch size); its gradient with
# respect to $\theta$ is the **meta-gradient**.
#
# ## 2. The chain rule through one inner step
#
# $\theta'_i$ depends on $\theta$, so by the chain rule
#
# $$\nabla_\theta \mathcal{L}_{\text{query}}(\theta'_i)
#   = \Big(\frac{\partial \theta'_i}{\partial \theta}\Big)^{\!\top} \nabla_{\theta'} \mathcal{L}_{\text{query}}(\theta'_i)
#   = \big(I - \alpha \nabla^2_\theta \mathcal{L}_{\text{support}}(\theta)\big)\, \nabla_{\theta'} \mathcal{L}_{\text{query}}(\theta'_i).$$
#
# The matrix $H = \nabla^2_\theta \mathcal{L}_{\text{support}}(\theta)$ is the **Hessian** of the
# support loss: a *second-order* term. It is why MAML is called second order, and why the inner
# update must keep its graph (`create_graph=True`).
#
# ## 3. A linear model, in closed form
#
# Take $f_w(x) = x^\top w$ and $\mathcal{L}(w) = \frac{1}{n}\lVert X w - y \rVert^2$. Then
#
# $$\nabla \mathcal{L}(w) = \tfrac{2}{n} X^\top (X w - y), \qquad H = \tfrac{2}{n} X^\top X \;(\text{constant}).$$
#
# We work in float64 so that three independent computations can agree to ~1e-10.

# %%
g = torch.Generator().manual_seed(0)
dtype = torch.float64
x_support, y_support = torch.randn(5, 3, generator=g, dtype=dtype), torch.randn(5, generator=g, dtype=dtype)
x_query, y_query = torch.randn(8, 3, generator=g, dtype=dtype), torch.randn(8, generator=g, dtype=dtype)
w = torch.randn(3, generator=g, dtype=dtype)
inner_lr = 0.1  # α

# %% [markdown]
# The gradient, the Hessian, the adapted $w'$ and the meta-gradient, each next to its formula:

# %%
def grad(x, y, w):
    return 2 / len(x) * x.T @ (x @ w - y)           # ∇L(w)

hessian = 2 / len(x_support) * x_support.T @ x_support  # H = ∇²L_support
adapted = w - inner_lr * grad(x_support, y_support, w)  # w' = w − α ∇L_support(w)
closed_form = (torch.eye(3, dtype=dtype) - inner_lr * hessian) @ grad(x_query, y_query, adapted)  # (I − αH) ∇L_query(w')
closed_form

# %% [markdown]
# ## 4. The same by autograd, with the library
#
# The same linear model as an `nn.Linear(3, 1, bias=False)`, the task as a `Task` batch of one,
# and `maml.maml_loss`: autograd differentiates through the inner step for us.

# %%
model = nn.Linear(3, 1, bias=False).double()
task = tasks.Task(x_support[None], y_support[None, :, None], x_query[None], y_query[None, :, None])

def linear_meta_loss(w):  # the meta-loss as a function of w alone
    return maml.maml_loss(model, {"weight": w.reshape(1, 3)}, task, F.mse_loss, inner_lr)

w_leaf = w.clone().requires_grad_()
by_autograd = torch.autograd.grad(linear_meta_loss(w_leaf), w_leaf)[0]
torch.testing.assert_close(by_autograd, closed_form, rtol=1e-12, atol=1e-12)
print("autograd == closed form ✔", by_autograd)

# %% [markdown]
# ## 5. And by finite differences
#
# A third, independent check needs no derivative at all:
# $\partial_j F(w) \approx \frac{F(w + h e_j) - F(w - h e_j)}{2h}$ for the meta-loss $F$.

# %%
h = 1e-6
by_differences = torch.stack([(linear_meta_loss(w + h * e) - linear_meta_loss(w - h * e)).detach() / (2 * h)
                              for e in torch.eye(3, dtype=dtype)])
rel_err = ((by_differences - closed_form).norm() / closed_form.norm()).item()
print(f"relative error of finite differences: {rel_err:.1e}")
assert rel_err < 1e-8

# %% [markdown]
# For a real network there is no closed form, but `torch.autograd.gradcheck` compares autograd
# with finite differences for us: here through **two** inner steps of a small MLP, in float64.

# %%
mlp = models.MLP((1, 6, 6, 1), init="torch").double()
names = list(params.get_params(mlp))
sine_task = tasks.sample_sine_tasks(1, 5, 5, torch.Generator().manual_seed(0), dtype=dtype)

def mlp_meta_loss(*tensors):
    return maml.maml_loss(mlp, dict(zip(names, tensors)), sine_task, F.mse_loss, 0.05, inner_steps=2)

start = [p.detach().clone().requires_grad_() for p in params.get_params(mlp).values()]
assert torch.autograd.gradcheck(mlp_meta_loss, start, eps=1e-6, atol=1e-6)
print("gradcheck through two inner steps ✔")

# %% [markdown]
# ## 6. What First-Order MAML drops
#
# Dropping the Hessian term gives the **first-order** approximation
# $\nabla_\theta \mathcal{L}_{\text{query}}(\theta'_i) \approx \nabla_{\theta'} \mathcal{L}_{\text{query}}(\theta'_i)$:
# the inner gradient is treated as a constant. In code: `first_order=True`, i.e. `create_graph=False`.

# %%
first_order = grad(x_query, y_query, adapted)  # ∇L_query(w'), no (I − αH)
by_library = torch.autograd.grad(
    maml.maml_loss(model, {"weight": w_leaf.reshape(1, 3)}, task, F.mse_loss, inner_lr, first_order=True), w_leaf)[0]
torch.testing.assert_close(by_library, first_order)
print("first order:", first_order, "\nrelative difference to MAML:",
      f"{((first_order - closed_form).norm() / closed_form.norm()).item():.3f}")

# %% [markdown]
# The difference is the term $\alpha H \nabla \mathcal{L}_{\text{query}}$.

# %%
widgets.quiz("Predict before you run the next cell: α goes 0.001 → 0.01 → 0.1 → 0.3. The relative gap "
             "|MAML − FOMAML| / |MAML| between the two meta-gradients…",
             right=("grows with α",
                    "The dropped term is αH∇L_query(w′), larger for a larger α at the same H: the next cell prints "
                    "the gap for each α and asserts that it grows."),
             wrong={"shrinks with α": "a larger α makes the dropped term αH∇L_query larger, not smaller: see the "
                                      "next cell's numbers.",
                    "stays the same: FOMAML is a fixed approximation": "what FOMAML drops, αH∇L_query, depends on "
                    "α; at α → 0 the two gradients agree exactly."})

# %%
relative_gap = []
for a in [0.001, 0.01, 0.1, 0.3]:
    adapted_a = w - a * grad(x_support, y_support, w)
    full = (torch.eye(3, dtype=dtype) - a * hessian) @ grad(x_query, y_query, adapted_a)
    relative_gap.append(((full - grad(x_query, y_query, adapted_a)).norm() / full.norm()).item())
    print(f"α = {a:<5}  |MAML − FOMAML| / |MAML| = {relative_gap[-1]:.4f}")
assert relative_gap == sorted(relative_gap), "the gap should grow with α"

# %% [markdown]
# It grows with $\alpha$ (and with the curvature $H$); for $\alpha \to 0$ the two gradients agree.

# %% [markdown]
# ## 7. Taking outer steps
#
# `maml.maml_step` does the whole outer update $\theta \leftarrow \theta - \beta \nabla_\theta \frac1n\sum_i \mathcal{L}(\theta'_i, \mathcal{T}_i)$
# with any optimiser (the paper uses Adam with $\beta = 0.001$). A few outer steps on one meta-batch of
# sine tasks lower the loss *after adaptation*, which is exactly what MAML optimises.

# %%
net = models.MLP(init="torch")
theta = params.get_params(net)
outer = torch.optim.Adam(theta.values(), lr=0.001)     # β
meta_batch = tasks.sample_sine_tasks(10, shots=10, queries=10, generator=torch.Generator().manual_seed(3))
losses = [maml.maml_step(net, theta, outer, meta_batch, F.mse_loss, 0.01).item() for _ in range(30)]
print(f"meta-loss: {losses[0]:.3f} → {losses[-1]:.3f}")
assert losses[-1] < losses[0]

# %% [markdown]
# ## 8. Explore: the meta-loss of a one-parameter model
#
# The black curve is the meta-loss $F(w) = \mathcal{L}_{\text{query}}(w - \alpha \mathcal{L}'_{\text{support}}(w))$
# of a model $y = w x$. At the chosen $w$, the MAML slope (the exact derivative) is tangent to the
# curve; the FOMAML slope misses the factor $(1 - \alpha H)$. Increase $\alpha$ and watch them part.

# %%
explorer = widgets.meta_gradient_explorer()
explorer

# %% [markdown]
# **Open question (no check: thinking is the point).** The support loss of this model is a parabola in $w$
# with constant curvature $H$ (printed below). Move $\alpha$ past $1/H$: from there on the MAML and
# FOMAML tangents point in *opposite* directions, and exactly at $\alpha = 1/H$ the MAML slope is 0 for
# every $w$. Why at $1/H$, and why does the sign flip? Write your answer down before you open the worked one.
#
# <details><summary>Worked answer</summary>
#
# For $y = w x$ the inner step is $w' = w - \alpha \mathcal{L}_s'(w)$ with $\mathcal{L}_s'(w) = H (w - w^*_s)$,
# where $w^*_s$ is the minimum of the support loss. So $w' - w^*_s = (1 - \alpha H)(w - w^*_s)$: the step
# shrinks the distance to $w^*_s$ by the factor $1 - \alpha H$. The chain rule gives the two slopes
#
# $$\text{MAML: } \frac{d}{dw}\mathcal{L}_q(w') = (1 - \alpha H)\,\mathcal{L}_q'(w'), \qquad
# \text{FOMAML: } \mathcal{L}_q'(w').$$
#
# They differ by the factor $1 - \alpha H$ only. For $\alpha < 1/H$ it is positive (a step moves toward
# $w^*_s$ without reaching it), so both slopes point the same way. At $\alpha = 1/H$ one step lands exactly
# on $w^*_s$ from *any* $w$: $w'$ no longer depends on $w$, the meta-loss is flat and its true slope is 0,
# while FOMAML still reports $\mathcal{L}_q'(w^*_s)$, which is not 0 unless the query and support minima
# coincide. For $\alpha > 1/H$ the step overshoots $w^*_s$: moving $w$ to the right moves $w'$ to the
# *left*, so the true slope has the opposite sign of FOMAML's. FOMAML ignores how $w'$ depends on $w$,
# which is exactly the dropped factor. (Past $\alpha = 2/H$ the step would move $w'$ further from $w^*_s$
# than $w$ was: the inner loop diverges.)
# </details>

# %%
curvature = explorer.state["hessian"]
print(f"H = {curvature:.3f}, so 1/H = {1 / curvature:.3f} (the α slider runs from 0.01 to 0.3)")

# %% [markdown]
# ## Summary
#
# - Outer update (general performance): $\theta \leftarrow \theta - \beta \nabla_\theta \sum_i \mathcal{L}(\theta'_i, \mathcal{T}_i)$,
#   on the query sets, *through* the inner step.
# - One step: $\nabla_\theta \mathcal{L}(\theta'_i) = (I - \alpha H_{\text{support}}) \nabla_{\theta'} \mathcal{L}_{\text{query}}(\theta'_i)$.
# - Closed form, autograd (`maml.maml_loss`) and finite differences agree to ~1e-10 in float64.
# - First-Order MAML drops $\alpha H$; the gap grows with $\alpha$ and the curvature.

# %% [markdown]
# ## Check yourself

# %%
widgets.quiz("Which term makes the MAML meta-gradient second order?",
             right=("the Hessian of the support loss in (I − αH)",
                    "Differentiating θ′ = θ − α∇L(θ) with respect to θ brings in ∇²L, the Hessian."),
             wrong={"the query gradient ∇L_query(θ′)": "a gradient is a first derivative: FOMAML keeps exactly this "
                                                      "term and is first order.",
                    "the step size β": "β only scales the outer step; it brings in no derivative."})

# %%
widgets.quiz("What happens to the meta-gradient if the inner step is computed with create_graph=False?",
             right=("it loses the Hessian term: that is First-Order MAML",
                    "Without the graph the inner gradient is a constant, so ∂θ′/∂θ = I."),
             wrong={"nothing changes": "section 6 measured the difference: without the graph the factor (I − αH) "
                                       "becomes I.",
                    "it becomes zero": "θ′ = θ − α g still depends on θ; only g is frozen, so the gradient is "
                                       "∇L_query(θ′), not 0."})

# %%
widgets.quiz("On which data is the outer (meta) loss evaluated?",
             right=("the query sets, at the adapted θ′",
                    "General performance is judged after adaptation, on data the inner step did not see."),
             wrong={"the support sets, at θ": "that is the inner loss before adapting; the outer loss measures what "
                                              "the adaptation achieved.",
                    "the query sets, at θ": "right data, wrong parameters: at θ the inner step is ignored, which is "
                                            "joint training (the pretrained baseline), not MAML."})

# %% [markdown]
# ## Exercises
#
# **Exercise 3.1 — the meta-gradient of a linear model, in closed form.** For
# $\mathcal{L}(w) = \operatorname{mean}((X w - y)^2)$ return $(I - \alpha H_{\text{support}})\,\nabla \mathcal{L}_{\text{query}}(w')$
# with $w' = w - \alpha \nabla \mathcal{L}_{\text{support}}(w)$ (all tensors float64, `w` of shape `(d,)`).

# %%
def meta_gradient_linear(x_support, y_support, x_query, y_query, w, inner_lr):
    raise NotImplementedError


checks.check_meta_gradient_linear(meta_gradient_linear);

# %% [markdown]
# **Exercise 3.2 — the meta-loss.** For a batch of tasks, adapt each with *one* second-order inner
# step on its support set and return the mean query loss (a differentiable scalar tensor).

# %%
def meta_loss(model, theta, tasks, loss_fn, inner_lr):
    raise NotImplementedError


checks.check_meta_loss(meta_loss);
