"""The optimisation-based variants beyond the lesson's three, each as one ``Algorithm`` that the same
``training.meta_train``, ``training.evaluate_run`` and checkpoints run by name: Meta-SGD, ANIL, MAML++,
iMAML, and the metric-based reference point, prototypical networks.

An ``Algorithm`` says three things:

- ``inner_params(config, model)``: the learned inner-loop parameters it adds to θ (Meta-SGD's α, MAML++'s
  per-step α; ``{}`` for none). They live in ``Run.inner_params``, are optimised by the outer optimizer
  with θ, and are saved in the checkpoint.
- ``meta_backward(run, tasks, batched, scale)``: add ``scale`` × the meta-gradient to the ``.grad`` of the
  model's parameters and of ``run.inner_params``; return the (detached) loss it optimised.
- ``evaluate(run, tasks, protocol, transductive, report)``: fine-tune and score as the method does at
  meta-test (``protocol``: the family's ``inner_lr``, ``inner_steps``, ``inner_optimizer``).

To add one (iMAML, prototypical networks): write its module, register an ``Algorithm`` in ``REGISTRY``
below, give every family its training defaults (``families.GENERIC`` / ``OMNIGLOT`` / ``OMNIGLOT_WIDE``,
and the test protocol if it differs), and add its own options as ``Config`` fields validated in
``config.check_options``; ``config.ALGOS``, the ``--algo`` choices, ``meta_train``, ``evaluate_checkpoint``
and exact resume follow from ``REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

from torch import Tensor

from . import anil, imaml, mamlpp, metasgd, protonet
from . import params as P
from .evaluation import EvalResult, Protocol, evaluate
from .inner import SGD, InnerLoop, StepwiseSGD, by_name


@dataclass(frozen=True)
class Algorithm:
    """How the training loop, the evaluation and the checkpoints run one method (see the module)."""

    name: str
    meta_backward: Callable[..., Tensor]
    evaluate: Callable[..., EvalResult]
    inner_params: Callable[..., P.Params] = lambda config, model: {}
    learned_lr: bool = False  # its step sizes are learned: an --inner-lr at evaluation is refused
    # (params it adapts, InnerLoop, context or None) at meta-test, for methods that fine-tune; None otherwise
    test_loop: Callable[..., tuple] | None = None


def fine_tune(run, tasks, params: P.Params, loop: InnerLoop, transductive: bool, report, context=None) -> EvalResult:
    """The fine-tune-and-score evaluation of ``params`` with ``loop`` (inside ``context``, e.g. ANIL's)."""
    with context or nullcontext():
        return evaluate(run.model, params, tasks, run.family.loss, Protocol(loop, report=report,
                                                                              transductive=transductive),
                        run.family.metric)


# Each method's meta-test inner loop: (the parameters it adapts, the loop, a context to run it in) ------------

def _metasgd_test(run, protocol):
    alpha = {k: v.detach() for k, v in run.inner_params.items()}
    return P.get_params(run.model), InnerLoop(SGD(alpha), protocol["inner_steps"]), None


def _anil_test(run, protocol):
    head, _ = anil.split(run.model)
    return head, InnerLoop.sgd(protocol["inner_lr"], protocol["inner_steps"]), anil.head_only(run.model)


def _mamlpp_test(run, protocol):
    if run.inner_params:
        optimizer = StepwiseSGD({k: v.detach() for k, v in run.inner_params.items()})
    else:
        optimizer = SGD(protocol["inner_lr"])
    return P.get_params(run.model), InnerLoop(optimizer, protocol["inner_steps"]), None


def _fine_tune_with(test_loop):
    """The evaluation of a method whose meta-test is fine-tuning with ``test_loop(run, protocol)``."""
    def run_evaluation(run, tasks, protocol, transductive, report):
        params, loop, context = test_loop(run, protocol)
        return fine_tune(run, tasks, params, loop, transductive, report, context)
    return run_evaluation


# Meta-SGD ---------------------------------------------------------------------------------------------

def _metasgd_backward(run, tasks, batched, scale):
    cfg = run.config
    return metasgd.meta_backward(run.model, P.get_params(run.model), run.inner_params, tasks, run.family.loss,
                                 cfg.inner_steps, batched, scale)


# ANIL ---------------------------------------------------------------------------------------------------

def _anil_backward(run, tasks, batched, scale):
    cfg = run.config
    inner = InnerLoop.sgd(cfg.inner_lr, cfg.inner_steps)
    return anil.meta_backward(run.model, tasks, run.family.loss, inner, batched, scale)


# MAML++ -------------------------------------------------------------------------------------------------

def schedule(run) -> mamlpp.Schedule:
    """MAML++'s inner loop and loss weights at the run's current iteration."""
    cfg = run.config
    return mamlpp.Schedule.at(run.iteration, cfg.inner_steps, cfg.inner_lr, run.inner_params or None,
                              cfg.msl_iterations if cfg.msl else None,
                              cfg.first_order_iterations if cfg.doa else None)


def _mamlpp_backward(run, tasks, batched, scale):
    return mamlpp.meta_backward(run.model, P.get_params(run.model), tasks, run.family.loss, schedule(run), batched,
                                scale)


def _lslr_params(config, model):
    return mamlpp.init_lslr(P.get_params(model), config.inner_lr, config.inner_steps) if config.lslr else {}


# iMAML -------------------------------------------------------------------------------------------------

def imaml_settings(config) -> imaml.IMAML:
    """iMAML's settings of a run: λ, the proximal inner loop (inner_lr, inner_steps) and the CG steps."""
    return imaml.IMAML(config.imaml_lambda, config.inner_lr, config.inner_steps, config.cg_steps)


def _imaml_backward(run, tasks, batched, scale):
    loss, residual = imaml.meta_backward(run.model, P.get_params(run.model), tasks, run.family.loss,
                                         imaml_settings(run.config), scale, batched=batched)
    run.pending.setdefault("cg_residual", []).append(residual)  # logged (largest per log line) in the history
    return loss


def _imaml_test(run, protocol):
    params = P.get_params(run.model)
    loop = imaml.proximal_loop(params, run.config.imaml_lambda, protocol["inner_lr"], protocol["inner_steps"])
    return params, loop, None


# Prototypical networks ---------------------------------------------------------------------------------

def _protonet_backward(run, tasks, batched, scale):
    return protonet.meta_backward(run.model, P.get_params(run.model), tasks, batched, scale)


def _protonet_evaluate(run, tasks, protocol, transductive, report):
    if report is not None and set(report) != {0}:
        raise ValueError(f"prototypical networks do not fine-tune: the only step to report is 0, got {list(report)}; "
                         "drop --steps")
    if not transductive:
        raise ValueError("prototypical networks embed a task's support and query sets together (transductive): "
                         "drop --non-transductive")
    return protonet.evaluate(run.model, P.get_params(run.model), tasks)


REGISTRY: dict[str, Algorithm] = {
    "metasgd": Algorithm("metasgd", _metasgd_backward, _fine_tune_with(_metasgd_test),
                         lambda config, model: metasgd.init_alpha(P.get_params(model), config.inner_lr), True,
                         _metasgd_test),
    "anil": Algorithm("anil", _anil_backward, _fine_tune_with(_anil_test), test_loop=_anil_test),
    "mamlpp": Algorithm("mamlpp", _mamlpp_backward, _fine_tune_with(_mamlpp_test), _lslr_params, True, _mamlpp_test),
    "imaml": Algorithm("imaml", _imaml_backward, _fine_tune_with(_imaml_test), test_loop=_imaml_test),
    "protonet": Algorithm("protonet", _protonet_backward, _protonet_evaluate),
}


def test_loop(run, protocol: dict) -> tuple:
    """``(params, loop, context)``: what ``run``'s method adapts at meta-test, with which inner loop, inside
    which context (``None``, or ANIL's ``head_only``); MAML, FOMAML, Reptile and the pretrained baseline
    fine-tune every parameter with the ``protocol``'s optimizer. For plots and explorers of adapted models."""
    algorithm = get(run.config.algo)
    if algorithm is not None and algorithm.test_loop is None:
        raise ValueError(f"{run.config.algo} does not fine-tune at meta-test")
    if algorithm is not None:
        return algorithm.test_loop(run, protocol)
    loop = InnerLoop(by_name(protocol["inner_optimizer"], protocol["inner_lr"]), protocol["inner_steps"])
    return P.get_params(run.model), loop, None


def get(name: str) -> Algorithm | None:
    """The registered algorithm called ``name``; ``None`` for the lesson's (maml, fomaml, reptile, pretrain)."""
    return REGISTRY.get(name)
