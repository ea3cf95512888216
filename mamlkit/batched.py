"""The meta-batch as one batched computation: ``torch.func.vmap`` over tasks of the inner loop
(``inner.InnerLoop``). Equal to the per-task loop in ``maml.py`` (tested).
"""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn
from torch.func import vmap

from .inner import AdamState, InnerLoop, task_losses
from .params import Params, forward
from .tasks import Task

FUSED_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def check_batchable(model: nn.Module) -> None:
    """Refuse models the batched path would get wrong, naming the fix.

    Running statistics cannot be updated per task under ``vmap``, and the fused normalisation
    kernels return wrong second-order gradients under ``vmap`` (torch 2.13): use
    ``mamlkit.models.BatchNorm`` (batch statistics, plain tensor ops) instead.
    """
    for name, module in model.named_modules():
        if isinstance(module, FUSED_NORMS):
            running = getattr(module, "track_running_stats", False)
            why = ("keeps running statistics" if running
                   else "uses a fused kernel whose meta-gradient is wrong under vmap")
            raise ValueError(
                f"batched=True cannot run {name or 'the model'} ({type(module).__name__}, which {why}): "
                "replace it with mamlkit.models.BatchNorm (batch statistics only, as MAML does; set "
                "track_running_stats=False semantics), or use batched=False (the per-task loop)")


def prefer_batched(model: nn.Module) -> bool:
    """Whether the batched path is the faster default for ``model``: any model it can run, on CUDA;
    on the CPU only models without convolutions (Conv4 measured 2× slower under vmap on the CPU,
    benchmarks/README.md).
    """
    try:
        check_batchable(model)
    except ValueError:
        return False
    on_cuda = any(p.is_cuda for p in model.parameters())
    return on_cuda or not any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def adapt_batched(model: nn.Module, loss_fn, params: Params, x: Tensor, y: Tensor, loop: InnerLoop,
                  state=None) -> tuple[Params, object]:
    """Adapt on every task at once; ``x``, ``y`` have a leading task dimension, so do the adapted
    parameters. Every task starts from ``state`` (default: the optimizer's fresh state); the state
    returned is the tasks' mean state after their steps (Adam's step count + ``loop.steps``), the
    parallel counterpart of the per-task loop, where each task continues from the one before."""
    check_batchable(model)
    state = loop.optimizer.init(params) if state is None else state
    if state is None:  # a stateless optimizer (SGD)
        adapted = vmap(lambda p, xs, ys: loop.adapt(model, loss_fn, p, xs, ys)[0], in_dims=(None, 0, 0))
        return adapted(params, x, y), None

    def one_task(p, xs, ys, m, s):
        phi, end = loop.adapt(model, loss_fn, p, xs, ys, AdamState(state.step, m, s))
        return phi, end.exp_avg, end.exp_avg_sq

    phis, m, s = vmap(one_task, in_dims=(None, 0, 0, None, None))(params, x, y, state.exp_avg, state.exp_avg_sq)
    mean = {k: v.detach().mean(0) for k, v in m.items()}, {k: v.detach().mean(0) for k, v in s.items()}
    return phis, AdamState(state.step + loop.steps, *mean)


def batched_task_losses(model: nn.Module, params: Params, tasks: Task, loss_fn, loop: InnerLoop) -> Tensor:
    """Query loss of every task after adaptation, shape (tasks,). A model with ``stacked = True``
    (``models.MLP``) runs on every task's parameters stacked (no ``vmap``: 1.7–1.9× faster on the sine MLP,
    benchmarks/README.md), any other under ``vmap``."""
    if not isinstance(tasks, Task):
        raise TypeError("batched=True needs a Task batch (tensors with a leading task dimension)")
    check_batchable(model)
    if getattr(model, "stacked", False):
        xs, ys, xq, yq = tasks.tensors()[:4]
        stacked = {k: v.expand(len(xs), *v.shape) for k, v in params.items()}
        adapted, _ = replace(loop, stacked=True).adapt(model, loss_fn, stacked, xs, ys)
        return task_losses(loss_fn, forward(model, adapted, xq), yq)

    def one_task(p, xs, ys, xq, yq):  # adaptation and query loss in one vmap: less overhead than two
        adapted, _ = loop.adapt(model, loss_fn, p, xs, ys)
        return loss_fn(forward(model, adapted, xq), yq)

    return vmap(one_task, in_dims=(None, 0, 0, 0, 0))(params, *tasks.tensors()[:4])


def meta_backward_batched(model: nn.Module, params: Params, tasks: Task, loss_fn, loop: InnerLoop,
                          scale: float = 1.0, max_memory: float | None = None) -> Tensor:
    """Add ``scale`` × the meta-gradient of the mean query loss to ``params``' ``.grad``; return the loss.

    ``max_memory`` (MB) bounds the graph kept for the backward pass: the meta-batch is processed in
    chunks of tasks whose saved tensors fit it (measured on the first task), each chunk backpropagated
    before the next. The same gradient as one chunk (tested); ``None``: all tasks at once.
    """
    check_max_memory(max_memory)
    n, total, start, chunk = len(tasks), 0.0, 0, len(tasks) if max_memory is None else 1
    while start < n:
        loss = batched_task_losses(model, params, tasks[start: start + chunk], loss_fn, loop).sum() / n
        start += chunk
        if max_memory is not None and start == 1:  # size the other chunks from what one task keeps
            chunk = max(1, int(max_memory * 2**20 // max(saved_bytes(loss), 1)))
        (scale * loss).backward()
        total = total + loss.detach()
    return total


def check_max_memory(max_memory) -> None:
    if max_memory is not None and (isinstance(max_memory, bool) or not isinstance(max_memory, (int, float))
                                   or not max_memory > 0):
        raise ValueError(f"max_memory must be a number of megabytes > 0 (or None for no limit), got {max_memory!r}")


def saved_bytes(output: Tensor) -> int:
    """Bytes of the distinct tensors the autograd graph of ``output`` keeps for the backward pass."""
    seen, stack, storages, total = set(), [output.grad_fn], set(), 0
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
        for name in dir(fn):
            if not name.startswith("_saved_"):
                continue
            try:
                value = getattr(fn, name)
            except RuntimeError:  # already freed
                continue
            for t in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(t, Tensor) and t.untyped_storage().data_ptr() not in storages:
                    storages.add(t.untyped_storage().data_ptr())
                    total += t.untyped_storage().nbytes()
    return total
