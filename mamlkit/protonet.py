"""Prototypical networks (Snell et al. 2017), the metric-based reference point: no inner loop. Embed
every image, average each class's support embeddings into a prototype ``c_k``, and classify a query
``x`` by ``softmax_k(−‖f(x) − c_k‖²)``; meta-train the embedding ``f`` with the query cross-entropy,
evaluate with no fine-tuning at all.

The embedding is any model whose output is a vector per example: on Omniglot the Conv4 body without its
classifier (``models.Conv4(head=False)``). A task's support and query images are embedded in one batch
(as the authors' code does), so the Conv4's batch statistics are the task's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batched import prefer_batched
from .evaluation import EvalResult
from .params import Params, forward
from .tasks import Task, as_batch


def _check_labels(y: Tensor, ways: int) -> None:
    if y.is_floating_point() or y.dim() != 1:
        raise ValueError(f"prototypical networks need integer class labels of shape (examples,) per task, got "
                         f"{y.dtype} of shape {tuple(y.shape)}: a classification family (e.g. omniglot), "
                         "not regression (sinusoid)")
    counts = torch.bincount(y, minlength=ways)
    if len(counts) > ways or not bool((counts > 0).all()):
        raise ValueError(f"every class 0..{ways - 1} needs at least one support example, got class counts "
                         f"{counts.tolist()}: remap each task's labels to 0..ways-1")


def prototypes(embeddings: Tensor, labels: Tensor, ways: int) -> Tensor:
    """The mean support embedding of each class, shape (ways, features): row ``k`` is ``c_k``."""
    onehot = F.one_hot(labels, ways).to(embeddings.dtype)  # (support, ways)
    return (onehot.T @ embeddings) / onehot.sum(0)[:, None]


def logits(queries: Tensor, protos: Tensor) -> Tensor:
    """``−‖f(x) − c_k‖²`` for every query and class, shape (queries, ways)."""
    return -((queries[:, None, :] - protos[None, :, :]) ** 2).sum(-1)


def task_logits(model: nn.Module, params: Params, x_support: Tensor, y_support: Tensor, x_query: Tensor,
                ways: int) -> Tensor:
    """One task's query logits: support and query embedded together, prototypes from the support."""
    z = forward(model, params, torch.cat([x_support, x_query]))
    if z.dim() != 2:
        raise ValueError(f"the embedding network must return one vector per example, got shape {tuple(z.shape)}: "
                         "flatten its output (Conv4(head=False) does)")
    return logits(z[len(x_support):], prototypes(z[:len(x_support)], y_support, ways))


def ways_of(tasks: Task) -> int:
    """The number of classes of a batch of tasks (labels 0..ways-1 in every support set), checked."""
    y = tasks.y_support
    if y.is_floating_point():
        _check_labels(y[0], 1)
    ways = int(y.max()) + 1
    for labels in y:
        _check_labels(labels, ways)
    if tasks.y_query.is_floating_point() or int(tasks.y_query.min()) < 0 or int(tasks.y_query.max()) >= ways:
        raise ValueError(f"query labels must be integers in 0..{ways - 1}, the classes of the support set")
    return ways


def batch_logits(model: nn.Module, params: Params, tasks: Task, batched: bool | None = None) -> Tensor:
    """Query logits of every task, shape (tasks, queries, ways): a ``vmap`` over tasks (``batched``), or a
    loop (the default on the CPU for convolutional models, ``batched.prefer_batched``); the same values."""
    tasks = as_batch(tasks, "protonet")
    ways = ways_of(tasks)
    if batched is None:
        batched = prefer_batched(model)
    if batched:
        return torch.func.vmap(lambda xs, ys, xq: task_logits(model, params, xs, ys, xq, ways))(
            tasks.x_support, tasks.y_support, tasks.x_query)
    return torch.stack([task_logits(model, params, t.x_support, t.y_support, t.x_query, ways) for t in tasks])


def loss(model: nn.Module, params: Params, tasks: Task, batched: bool | None = None) -> Tensor:
    """Mean query cross-entropy over the tasks (each task's loss a mean over its queries)."""
    out = batch_logits(model, params, tasks, batched)
    return F.cross_entropy(out.flatten(0, 1), tasks.y_query.flatten())


def meta_backward(model: nn.Module, params: Params, tasks: Task, batched: bool | None = None,
                  scale: float = 1.0) -> Tensor:
    """Add ``scale`` × the gradient of the mean query loss to ``params``' ``.grad``; return the loss (the same
    signature of work as ``maml.meta_backward``, for the training loop)."""
    value = loss(model, params, tasks, batched)
    (scale * value).backward()
    return value.detach()


def evaluate(model: nn.Module, params: Params, tasks: Task, chunk: int = 100,
             batched: bool | None = None) -> EvalResult:
    """Query accuracy of every task with no fine-tuning (one scored "step", 0), mean ± 95% CI over the
    tasks: the same ``EvalResult`` as ``evaluation.evaluate``, so results pair task by task."""
    tasks = as_batch(tasks, "protonet.evaluate")
    rows = []
    with torch.no_grad():
        for i in range(0, len(tasks), chunk):
            part = tasks[i: i + chunk]
            out = batch_logits(model, params, part, batched)
            rows.append((out.argmax(-1) == part.y_query).float().mean(-1))
    return EvalResult([0], torch.cat(rows)[:, None].cpu(), "accuracy")
