"""Few-shot character recognition for notebook 08: tasks from one alphabet's meta-test characters (or from
all alphabets mixed, optionally rotated, as the benchmark),
predictions before and after adaptation, a network trained from scratch on the same examples,
image plots and the alphabet explorer.

Introduced in notebook 08_characters.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import params as P
from ..data.omniglot import Omniglot, OmniglotError, load_omniglot, split_classes
from ..episodes import EpisodeSampler
from ..inner import InnerLoop, by_name
from ..models import Conv4
from ..tasks import Task
from .feedback import Fail, call, checker, diagnose, expect_tensor


def load_characters(data_dir=None) -> Omniglot | None:
    """Omniglot, or ``None`` with the reason printed (offline and no local copy)."""
    try:
        return load_omniglot(data_dir)
    except OmniglotError as e:
        print("Omniglot is not available, so this notebook shows no characters:\n" + str(e))
        return None


MIXED = "all alphabets (mixed)"  # the benchmark's tasks: five characters from any meta-test alphabets


def test_alphabets(data: Omniglot, ways: int = 5, split: str = "maml") -> list[str]:
    """Alphabets with at least ``ways`` characters in the meta-test split (never seen in training)."""
    test = split_classes(data, split)["test"]
    names, counts = np.unique(data.alphabets[test], return_counts=True)
    return [str(n) for n, c in zip(names, counts) if c >= ways]


def alphabet_task(data: Omniglot, alphabet: str, ways: int = 5, shots: int = 1, queries: int = 5, seed: int = 0,
                  split: str = "maml", device="cpu", rotate: bool = False) -> Task:
    """One N-way K-shot task over meta-test characters of ``alphabet``: all N from that one alphabet (harder:
    its characters look alike), or from any alphabets with ``alphabet=MIXED`` (the benchmark's tasks).
    Upright, or each character turned by a random multiple of 90° with ``rotate`` (as the benchmark)."""
    test = split_classes(data, split)["test"]
    classes = test if alphabet == MIXED else test[data.alphabets[test] == alphabet]
    sampler = EpisodeSampler(data.images, classes, ways, shots, queries, rotate=rotate, device=device)
    return sampler.sample(1, torch.Generator().manual_seed(seed))[0]


def predictions(model: nn.Module, params: P.Params, task: Task, inner_lr: float, inner_steps: int,
                inner_optimizer: str = "sgd") -> list[torch.Tensor]:
    """Predicted query labels after 0, 1, …, ``inner_steps`` adaptation steps on the support set."""
    loop = InnerLoop(by_name(inner_optimizer, inner_lr), inner_steps)
    path, _ = loop.trajectory(model, F.cross_entropy, params, task.x_support, task.y_support, graph=False)
    with torch.no_grad():
        return [P.forward(model, phi, task.x_query).argmax(-1) for phi in path]


def train_from_scratch(task: Task, ways: int, steps: int = 100, lr: float = 0.01, seed: int = 0) -> float:
    """Query accuracy of a fresh Conv4 trained (Adam) only on the task's support set."""
    torch.manual_seed(seed)
    model = Conv4(ways).to(task.x_support.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(task.x_support), task.y_support).backward()
        optimizer.step()
    with torch.no_grad():
        return float((model(task.x_query).argmax(-1) == task.y_query).float().mean())


def mosaic(images: torch.Tensor, columns: int) -> np.ndarray:
    """(n, 1, H, W) images as one (rows·H, columns·W) array, white ink on black, 1-pixel gaps."""
    n, _, h, w = images.shape
    rows = -(-n // columns)
    canvas = np.full((rows * (h + 1), columns * (w + 1)), 0.35)
    for i, image in enumerate(images[:, 0].cpu().numpy()):
        r, c = divmod(i, columns)
        canvas[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = image
    return canvas


def plot_task_images(task: Task, ways: int, ax=None):
    """Support images (top row, one per class) above the query images (one column per class)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    order = torch.cat([task.x_support[task.y_support == c][:1] for c in range(ways)] +
                      [task.x_query[(task.y_query == c)] for c in range(ways)])
    queries = order[ways:].reshape(ways, -1, *order.shape[1:]).transpose(0, 1).reshape(-1, *order.shape[1:])
    ax.imshow(mosaic(torch.cat([order[:ways], queries]), ways), cmap="gray", vmin=0, vmax=1)
    ax.axhline(28.5, color="C1", lw=2)
    ax.set(xticks=[(28 + 1) * c + 14 for c in range(ways)], xticklabels=[f"class {c}" for c in range(ways)],
           yticks=[], title="support (top row) and query images")
    return ax


def plot_predictions(task: Task, predicted: torch.Tensor, ax=None, title: str = ""):
    """Query images with wrong predictions framed in red; the title gives the accuracy."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    ax = ax or plt.gca()
    columns = 8
    ax.imshow(mosaic(task.x_query, columns), cmap="gray", vmin=0, vmax=1)
    for i, (p, y) in enumerate(zip(predicted.tolist(), task.y_query.tolist())):
        r, c = divmod(i, columns)
        ax.text(c * 29 + 1, r * 29 + 7, str(p), color="C2" if p == y else "C3", fontsize=8, weight="bold")
        if p != y:
            ax.add_patch(Rectangle((c * 29 - 0.5, r * 29 - 0.5), 28, 28, fill=False, ec="C3", lw=1.5))
    accuracy = float((predicted == task.y_query).float().mean())
    ax.set(xticks=[], yticks=[], title=f"{title} accuracy {accuracy:.0%}".strip())
    return ax


def characters_explorer(data: Omniglot, model: nn.Module, inner_lr: float = 0.4, ways: int = 5, queries: int = 3):
    """Pick an alphabet (or all alphabets mixed, as the benchmark), a character set and whether to rotate them;
    watch the predictions change with the inner steps."""
    import ipywidgets as W

    from .widgets import SLIDER, Explorer

    alphabets = test_alphabets(data, ways)
    controls = {
        "alphabet": W.Dropdown(options=[*alphabets, MIXED], value=alphabets[0], description="alphabet"),
        "seed": W.IntSlider(0, 0, 20, description="character set", **SLIDER),
        "steps": W.IntSlider(1, 0, 5, description="inner steps", **SLIDER),
        "rotate": W.Checkbox(False, description="rotate (×90°)"),
    }
    params = P.get_params(model)

    def draw(ax, alphabet, seed, steps, rotate=False):
        task = alphabet_task(data, alphabet, ways, 1, queries, seed, rotate=rotate)
        predicted = predictions(model, params, task, inner_lr, steps)[-1]
        plot_predictions(task, predicted, ax, f"{alphabet}, {steps} step{'s' * (steps != 1)}:")
        return {"accuracy": float((predicted == task.y_query).float().mean()), "task": task}

    return Explorer(controls, draw, figsize=(5.6, 2.2))


@checker
def check_accuracy(fn):
    """Exercise: ``accuracy(logits, labels)`` -> the fraction of arg-max predictions that are right."""
    # square on purpose (4 rows, 4 classes): an arg-max over the wrong dimension still compares, and is caught
    logits = torch.tensor([[0.0, 1.0, 5.0, 0.0], [4.0, 0.0, 0.0, 1.0], [3.0, 0.0, 1.0, 4.0], [0.0, 2.0, 0.0, 0.0]])
    labels = torch.tensor([2, 0, 1, 1])  # rows' arg-max 2, 0, 3, 1: three of four right
    result = call(fn, logits, labels)
    result = expect_tensor(result, torch.tensor(0.75), "accuracy").double()
    diagnose(result, {
        "you returned a percentage (75.0): return the fraction, 0.75": torch.tensor(75.0, dtype=torch.float64),
        "you returned the number of right rows (3): divide by the number of rows":
            torch.tensor(3.0, dtype=torch.float64),
        "0.0 here: the arg-max ran over the rows (dim=0); each row is one drawing, take the arg-max over its "
        "classes, the last dimension (dim=-1)": torch.tensor(0.0, dtype=torch.float64),
    }, compare=torch.isclose)
    if not torch.isclose(result, torch.tensor(0.75, dtype=torch.float64)):
        raise Fail(f"expected 0.75 (3 of 4 right), got {float(result):.3g}: compare logits.argmax(-1) with labels")
    return "accuracy is the mean of (logits.argmax(-1) == labels)"
