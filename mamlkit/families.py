"""Task families: what a family of tasks must say for any algorithm to meta-learn on it, and a
registry by name (the command line's ``--task``).

A family builds its default model, names its loss and metric, and samples a batch of tasks for a
split (``train``, ``val``, ``test``) with K shots and Q queries from a seeded generator; its fixed
validation and test tasks are the same on every run and device. To meta-learn on your own tasks,
subclass ``Family``, write ``sample`` (and ``model`` if the MLP does not fit), and ``register`` it::

    class Lines(Family):
        name = "lines"

        def sample(self, n, split, shots, queries, generator, device="cpu"):
            slope = torch.rand(n, 1, 1, generator=generator) * 4 - 2
            x = torch.rand(n, shots + queries, 1, generator=generator) * 10 - 5
            y = slope * x
            return Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:]).to(device)

    register(Lines())    # then: meta_train(Config(task="lines")), python -m mamlkit train --task lines

Introduced in notebooks 01_tasks (sine waves) and 08_characters (Omniglot).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .models import MLP, Conv4
from .tasks import TEST_SEED, Task, sample_sine_tasks, sine_test_tasks

SPLITS = ("train", "val", "test")
SEEDS = {"test": TEST_SEED, "val": TEST_SEED + 1}  # the fixed tasks of each split are drawn from these
QUERY_POINTS = 100  # fresh query points per sine test task

# Training hyper-parameters by algorithm when a family says nothing else: the MAML paper's sine protocol
# (§5.1, App. C) for maml, fomaml and the pretrained baseline; Reptile's values were chosen on the sine
# validation tasks (README).
_SINE = dict(iterations=70_000, inner_lr=0.01, outer_lr=0.001, inner_steps=1, meta_batch_size=25,
             shots=10, queries=10)
# Meta-SGD and ANIL: the MAML protocol (Meta-SGD's α starts at inner_lr); MAML++: 5 inner steps, as its paper,
# so that the multi-step loss has steps to weigh, and its paper's cosine-annealed β (with the authors' σ = 0.01
# initialisation and a constant β, a run diverged at iteration 6,562), PyTorch's initialisation as our MAML.
# MAML: the paper's protocol with three MAML++-style remedies, because the paper's exact protocol (the
# authors' σ = 0.01 initialisation, constant β, second order throughout) meta-learns a starting point from which
# 10 test steps of α = 0.01 diverge on some test tasks (README, notebook 04): PyTorch's default initialisation,
# β annealed on a cosine, and first-order meta-gradients for the first third of training (derivative-order
# annealing). `--init maml --outer-schedule constant --no-doa` is the paper's protocol exactly.
_SINE_MAML = dict(_SINE, init="torch", outer_schedule="cosine", doa=True)
GENERIC = {"maml": _SINE_MAML, "fomaml": _SINE, "pretrain": _SINE,
           "reptile": dict(_SINE, outer_lr=1.0, inner_steps=10),
           "metasgd": _SINE, "anil": _SINE, "mamlpp": dict(_SINE, inner_steps=5, init="torch", outer_schedule="cosine"),
           "imaml": dict(_SINE, inner_lr=0.01, inner_steps=10, imaml_lambda=10.0, cg_steps=5)}
# iMAML on sine waves: λ = 10 (with λ = 2 the proximal system I + H/λ was indefinite on many tasks, CG residuals
# up to 400 in a 400-iteration probe), 10 proximal steps of MAML's 0.01; chosen by short probes, not tuned. Plain
# proximal steps made these runs diverge within 1,000 iterations (meta-training sharpens θ until α(λ + λ_max) > 2);
# the safeguarded step (imaml.ProximalSGD) trains stably (README). Fine-tuned at test with the same proximal steps.


class Family:
    """A family of tasks. Override ``sample``; the rest has defaults that fit small regression tasks
    (the MLP 1-40-40-1, MSE, the sine protocol's hyper-parameters, 5-shot 10-step SGD at test)."""

    name = "family"
    metric = "mse"  # what evaluation reports: "mse", or "accuracy" (arg-max of the model's outputs)
    higher_is_better = False
    loss = staticmethod(F.mse_loss)

    def model(self, config) -> nn.Module:
        return MLP((1, *config.hidden, 1), config.init)

    def sample(self, n: int, split: str, shots: int, queries: int, generator: torch.Generator,
               device="cpu") -> Task:
        raise NotImplementedError(f"{type(self).__name__}.sample: return a Task batch of n tasks")

    def fixed_tasks(self, split: str, n: int, shots: int, queries: int | None = None, device="cpu") -> Task:
        """The same ``n`` validation or test tasks on every run and device."""
        generator = torch.Generator().manual_seed(SEEDS[split])
        return self.sample(n, split, shots, queries or QUERY_POINTS, generator, device)

    def configured(self, config) -> Family:
        """This family for ``config`` (a family with options, such as Omniglot's ways, reads them here)."""
        return self

    def defaults(self, algo: str, ways: int) -> dict:
        """Training hyper-parameters of ``algo`` on this family."""
        return GENERIC[algo]

    def protocol(self, algo: str, ways: int) -> dict:
        """How a model trained with ``algo`` is fine-tuned at meta-test (iMAML: its proximal steps, with the
        step size it trained with)."""
        lr = GENERIC["imaml"]["inner_lr"] if algo == "imaml" else 0.01
        return dict(shots=5, inner_lr=lr, inner_steps=10, inner_optimizer="sgd")


class Sinusoid(Family):
    """Sine waves ``A sin(x − φ)``, A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5] (MAML paper §5.1)."""

    name = "sinusoid"

    def sample(self, n, split, shots, queries, generator, device="cpu"):
        return sample_sine_tasks(n, shots, queries, generator, device)

    def fixed_tasks(self, split, n, shots, queries=None, device="cpu"):
        return sine_test_tasks(n, shots, queries or QUERY_POINTS, SEEDS[split], device)


# Omniglot, MAML paper App. A.1 (5-way): inner lr 0.4 with the mean cross-entropy, 1 step at train, 3 at
# test, meta-batch 32, 60k iterations. Reptile: the official Omniglot command (inner Adam, β1 = 0, lr 0.001,
# 5 steps on 10 "train shots" per class, meta-batch 5, ε = 1 annealed to 0, 100k iterations; the inner
# Adam's state carried from task to task as that code does). From WIDE_WAYS classes: MAML App. A.1 (5 inner
# steps of α = 0.1 at train and test, meta-batch 16; the paper's number used with the mean cross-entropy)
# and the Reptile code's 20-way command (inner Adam lr 0.0005, 10 iterations of batch 20, 200k iterations).
WIDE_WAYS = 20
_OMNIGLOT = dict(iterations=60_000, inner_lr=0.4, outer_lr=0.001, inner_steps=1, meta_batch_size=32,
                 shots=1, queries=15)
OMNIGLOT = {"maml": _OMNIGLOT, "fomaml": _OMNIGLOT, "pretrain": _OMNIGLOT,
            "reptile": dict(iterations=100_000, inner_lr=0.001, outer_lr=1.0, inner_steps=5, meta_batch_size=5,
                            shots=10, queries=5, inner_optimizer="adam", inner_batch=10, keep_inner_state=True),
            "metasgd": _OMNIGLOT, "anil": _OMNIGLOT, "mamlpp": dict(_OMNIGLOT, inner_lr=0.1, inner_steps=5),
            # iMAML: λ = 2, 10 proximal steps of 0.2, 5 CG steps (not tuned here); prototypical networks: the outer
            # Adam of 0.001 as Snell et al., 4 five-way episodes per update (they train on 60-way episodes);
            # inner_lr and inner_steps are unused by protonet (no inner loop)
            "imaml": dict(_OMNIGLOT, inner_lr=0.2, inner_steps=10, imaml_lambda=2.0, cg_steps=5),
            "protonet": dict(_OMNIGLOT, iterations=20_000, meta_batch_size=4)}
_WIDE_MAML = dict(inner_lr=0.1, inner_steps=5, meta_batch_size=16)
OMNIGLOT_WIDE = {"maml": _WIDE_MAML, "fomaml": _WIDE_MAML, "pretrain": _WIDE_MAML, "metasgd": _WIDE_MAML,
                 "anil": _WIDE_MAML, "mamlpp": _WIDE_MAML, "imaml": dict(meta_batch_size=16), "protonet": {},
                 "reptile": dict(iterations=200_000, inner_lr=0.0005, inner_steps=10, inner_batch=20)}
OMNIGLOT_TEST = {"sgd": dict(shots=1, inner_lr=0.4, inner_steps=3, inner_optimizer="sgd"),
                 "mamlpp": dict(shots=1, inner_lr=0.1, inner_steps=5, inner_optimizer="sgd"),
                 "imaml": dict(shots=1, inner_lr=0.2, inner_steps=10, inner_optimizer="sgd"),
                 "adam": dict(shots=1, inner_lr=0.001, inner_steps=50, inner_optimizer="adam")}
OMNIGLOT_TEST_WIDE = {"sgd": dict(inner_lr=0.1, inner_steps=5), "mamlpp": dict(inner_lr=0.1, inner_steps=5),
                      "imaml": {},
                      "adam": dict(inner_lr=0.0005)}


@lru_cache(maxsize=4)
def _omniglot(data_dir, split: str):
    from .data.omniglot import load_omniglot, split_classes

    data = load_omniglot(data_dir)
    return data, split_classes(data, split)


@lru_cache(maxsize=8)
def _episodes(where: tuple, ways: int, shots: int, queries: int, device: str):
    from .episodes import EpisodeSampler

    data_dir, character_split, split = where
    data, splits = _omniglot(data_dir, character_split)
    return EpisodeSampler(data.images, splits[split], ways, shots, queries, rotate=True, device=device)


class Omniglot(Family):
    """N-way K-shot character recognition on Omniglot: a random 90° rotation per class, labels
    shuffled per task (MAML paper §5.2); the Conv4 of the paper; accuracy at test."""

    name = "omniglot"
    metric = "accuracy"
    higher_is_better = True
    loss = staticmethod(F.cross_entropy)

    def __init__(self, ways: int = 5, data_dir=None, split: str = "maml", queries: int = 15):
        self.ways, self.data_dir, self.split, self.queries = ways, data_dir, split, queries

    def configured(self, config) -> Omniglot:
        return Omniglot(config.ways, config.data_dir, config.split, config.queries or 15)

    def model(self, config) -> nn.Module:
        return Conv4(config.ways, head=config.algo != "protonet")  # prototypical networks: the embedding only

    def sample(self, n, split, shots, queries, generator, device="cpu"):
        where = (self.data_dir, self.split, split)
        return _episodes(where, self.ways, shots, queries, str(device)).sample(n, generator)

    def fixed_tasks(self, split, n, shots, queries=None, device="cpu"):
        return super().fixed_tasks(split, n, shots, queries or self.queries, device)

    def defaults(self, algo, ways):
        return {**OMNIGLOT[algo], **(OMNIGLOT_WIDE[algo] if ways >= WIDE_WAYS else {})}

    def protocol(self, algo, ways):
        kind = {"reptile": "adam", "mamlpp": "mamlpp", "imaml": "imaml"}.get(algo, "sgd")
        return {**OMNIGLOT_TEST[kind], **(OMNIGLOT_TEST_WIDE[kind] if ways >= WIDE_WAYS else {})}


REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make ``family`` available by its name to ``Config(task=...)``, ``meta_train`` and the command line."""
    if not isinstance(family, Family):
        raise TypeError(f"register a Family instance (a subclass of mamlkit.families.Family), got {family!r}")
    REGISTRY[family.name] = family
    return family


def get(task) -> Family:
    """The family object for a registered name (a ``Family`` is returned as it is)."""
    if isinstance(task, Family):
        return task
    if task not in REGISTRY:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(REGISTRY)} or register a Family")
    return REGISTRY[task]


register(Sinusoid())
register(Omniglot())
