"""Memory (and time) of one meta-gradient against the number of inner steps: iMAML against second-order
MAML (W1 sine: MLP 1-40-40-1, meta-batch 25, K = 10 + 10). MAML keeps every inner step's graph, so the
bytes autograd saves for the backward pass grow linearly with the steps; iMAML's inner steps run without a
graph and its implicit gradient needs only the graph of ∇L_support at φ* (the Hessian-vector products of
CG), so its memory is the same for any number of steps. Time grows for both (the steps are still run).

    python benchmarks/imaml_memory.py            # prints the table (memory exact, time contaminated by load)
"""

import torch
import torch.nn.functional as F

from mamlkit import imaml, maml
from mamlkit import params as P
from mamlkit.course.notebook import measure_cost
from mamlkit.models import MLP
from mamlkit.tasks import sample_sine_tasks

STEPS = [1, 2, 5, 10, 20]


def main() -> None:
    torch.manual_seed(0)
    model = MLP(init="torch")
    theta = P.get_params(model)
    tasks = sample_sine_tasks(25, 10, 10, torch.Generator().manual_seed(0))

    def maml_gradient(k):
        return lambda: maml.maml_loss(model, theta, tasks, F.mse_loss, 0.01, k).backward()

    def imaml_gradient(k):
        return lambda: imaml.meta_backward(model, theta, tasks, F.mse_loss, imaml.IMAML(steps=k, lr=0.01))

    # alternate the two algorithms at every k, so that load from other processes hits both alike
    cost = {"maml": [], "imaml": []}
    for k in STEPS:
        cost["maml"].append(measure_cost(maml_gradient(k), repeats=3))
        cost["imaml"].append(measure_cost(imaml_gradient(k), repeats=3))
    print("| algo | " + " | ".join(f"k={k}" for k in STEPS) + " |")
    print("|---|" + "---|" * len(STEPS))
    for name, rows in cost.items():
        print(f"| {name} saved for backward (kB) | " + " | ".join(f"{b / 1024:.0f}" for _, b in rows) + " |")
    for name, rows in cost.items():
        print(f"| {name} time (ms) | " + " | ".join(f"{1000 * t:.1f}" for t, _ in rows) + " |")
    flat = len({b for _, b in cost["imaml"]}) == 1
    print(f"iMAML memory flat in k: {flat}; MAML k={STEPS[-1]} / k={STEPS[0]}: "
          f"{cost['maml'][-1][1] / cost['maml'][0][1]:.1f}x")


if __name__ == "__main__":
    main()
