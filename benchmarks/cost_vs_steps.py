"""Time and memory of one meta-gradient against the number of inner steps (W1 sine: MLP 1-40-40-1,
meta-batch 25, K = 10 + 10): second-order MAML grows linearly in memory, FOMAML and Reptile stay flat.

    python benchmarks/cost_vs_steps.py            # prints the table, writes benchmarks/cost_vs_steps.png
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mamlkit import maml, reptile  # noqa: E402
from mamlkit import params as P  # noqa: E402
from mamlkit.course import plots  # noqa: E402
from mamlkit.course.notebook import measure_cost  # noqa: E402
from mamlkit.models import MLP  # noqa: E402
from mamlkit.tasks import sample_sine_tasks  # noqa: E402

STEPS = list(range(1, 11))


def main() -> None:
    torch.manual_seed(0)
    model = MLP(init="torch")
    theta = P.get_params(model)
    tasks = sample_sine_tasks(25, 10, 10, torch.Generator().manual_seed(0))

    def meta_gradient(first_order, k):
        return lambda: torch.autograd.grad(maml.maml_loss(model, theta, tasks, F.mse_loss, 0.01, k, first_order),
                                           list(theta.values()))

    cost = {
        "maml": [measure_cost(meta_gradient(False, k), repeats=5) for k in STEPS],
        "fomaml": [measure_cost(meta_gradient(True, k), repeats=5) for k in STEPS],
        "reptile": [measure_cost(lambda k=k: reptile.reptile_step(model, theta, tasks, F.mse_loss, 0.01, k, 1.0),
                                 repeats=5) for k in STEPS],
    }
    print("| algo | " + " | ".join(f"k={k}" for k in STEPS) + " |")
    print("|---|" + "---|" * len(STEPS))
    for name, rows in cost.items():
        print(f"| {name} time (ms) | " + " | ".join(f"{1000 * t:.1f}" for t, _ in rows) + " |")
        print(f"| {name} saved for backward (kB) | " + " | ".join(f"{b / 1024:.0f}" for _, b in rows) + " |")
    fig, (ax_time, ax_memory) = plt.subplots(1, 2, figsize=(9, 3), layout="constrained")
    plots.plot_cost(STEPS, {n: [1000 * t for t, _ in r] for n, r in cost.items()}, "time per meta-step (ms)", ax_time)
    plots.plot_cost(STEPS, {n: [b / 1024 for _, b in r] for n, r in cost.items()}, "saved for backward (kB)",
                    ax_memory)
    out = Path(__file__).with_name("cost_vs_steps.png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
