"""The compiled meta-gradient (``--compile``) is the per-task loop's (float64, first and second order, several
inner steps), accumulates like ``.backward()``, trains like the batched path, and bad combinations are refused."""

import pytest
import torch
import torch.nn.functional as F

from mamlkit import maml, training
from mamlkit import params as P
from mamlkit.__main__ import main
from mamlkit.config import Config
from mamlkit.inner import InnerLoop
from mamlkit.models import MLP
from mamlkit.tasks import sample_sine_tasks


def meta_grad(model, tasks, inner, execution, start=None):
    params = P.get_params(model)
    for p in params.values():
        p.grad = None if start is None else torch.full_like(p, start)
    loss = maml.meta_backward(model, params, tasks, F.mse_loss, inner, execution, 0.5)
    return loss, {k: v.grad.clone() for k, v in params.items()}


@pytest.mark.parametrize("first_order", [False, True])
def test_compiled_meta_gradient_equals_the_loop(first_order):
    torch.manual_seed(0)
    model = MLP((1, 8, 8, 1)).double()
    tasks = sample_sine_tasks(5, 5, 5, torch.Generator().manual_seed(0), dtype=torch.float64)
    inner = InnerLoop.sgd(0.3, 2, first_order)
    loss_loop, loop = meta_grad(model, tasks, inner, maml.Execution(), start=0.25)
    loss_c, compiled = meta_grad(model, tasks, inner, maml.Execution(batched=True, compiled=True), start=0.25)
    torch.testing.assert_close(loss_c, loss_loop, rtol=1e-12, atol=0)
    for k in loop:
        torch.testing.assert_close(compiled[k], loop[k], rtol=1e-10, atol=1e-13)
    assert sum((g - 0.25).norm() for g in loop.values()) > 1e-3  # the gradient is not trivially zero
    if not first_order:  # the second-order term is there: first order would differ
        _, fo = meta_grad(model, tasks, InnerLoop.sgd(0.3, 2, True), maml.Execution())
        assert max((fo[k] - compiled[k]).abs().max() for k in fo) > 1e-6


def test_training_compiled_follows_the_batched_path():
    fast = dict(hidden=[8, 8], iterations=4, meta_batch_size=4, val_every=2, val_tasks=4, checkpoint_every=2)
    a = training.meta_train(Config(algo="maml", batched=True, **fast), progress=False)
    b = training.meta_train(Config(algo="maml", compiled=True, **fast), progress=False)
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("options, message", [
    (dict(compiled=True, algo="reptile"), "drop --compile"),
    (dict(compiled=True, batched=False), "drop --compile"),
    (dict(compiled=True, workers=2), "drop --compile"),
    (dict(compiled=True, max_memory=10.0), "drop --compile"),
    (dict(compiled="yes"), "drop --compile"),
])
def test_bad_compile_combinations_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Config(**options).resolved()


def test_execution_and_inner_loop_refusals():
    with pytest.raises(ValueError, match="needs batched=True"):
        maml.Execution(compiled=True)
    model = MLP((1, 4, 1))
    with pytest.raises(ValueError, match="plain SGD steps"):
        maml.meta_backward(model, P.get_params(model), sample_sine_tasks(2, 5, 5), F.mse_loss,
                           InnerLoop.sgd({k: torch.tensor(0.1) for k in P.get_params(model)}),
                           maml.Execution(batched=True, compiled=True))


def test_cli_compile_with_reptile_is_one_line(tmp_path, capsys):
    assert main(["train", "--algo", "reptile", "--compile", "--out", str(tmp_path / "x.pt"), "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert "drop --compile" in err and "\n" not in err


def test_compile_on_a_conv_model_on_the_cpu_warns():
    """Measured slower than the loop there: said before the long compilation; not for the MLP."""
    with pytest.warns(UserWarning, match="slower than the default per-task loop"):
        training.warn_compile_on_cpu_conv(Config(compiled=True), torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3)))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        training.warn_compile_on_cpu_conv(Config(compiled=True), MLP())
        training.warn_compile_on_cpu_conv(Config(), torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3)))


def test_batchnorm_takes_its_plain_ops_when_compiled():
    """Under torch.compile (which traces the torch.func transforms) BatchNorm uses the plain ops, exact to second
    order, not the fused kernel (the float64 Conv4 check against the loop: benchmarks/README.md)."""
    from mamlkit import models

    assert not models.under_transform()
    assert torch.compile(models.under_transform, backend="eager", fullgraph=True)()
