"""Training configuration: one dataclass, with the papers' hyper-parameters as defaults.

Introduced in notebook 04_maml.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

ALGOS = ("maml", "fomaml", "reptile", "pretrain")
TASKS = ("sinusoid", "omniglot")

# MAML paper §5.1 / App. C for maml, fomaml and the pretrained baseline. Reptile has no published
# sine protocol matching this evaluation; its values were chosen on the validation tasks (README).
_SINE = dict(iterations=70_000, inner_lr=0.01, outer_lr=0.001, inner_steps=1, meta_batch_size=25,
             shots=10, queries=10)
DEFAULTS = {
    ("sinusoid", "maml"): _SINE,
    ("sinusoid", "fomaml"): _SINE,
    ("sinusoid", "pretrain"): _SINE,
    ("sinusoid", "reptile"): dict(_SINE, inner_lr=0.01, outer_lr=1.0, inner_steps=10),
}
# MAML paper App. A.1 (5-way): inner lr 0.4 with the mean cross-entropy, 1 step at train, 3 at test,
# meta-batch 32, 60k iterations. Reptile: the official Omniglot command (inner Adam, β1 = 0, lr 0.001,
# 5 steps on 10 "train shots" per class, meta-batch 5, ε = 1 annealed to 0, 100k iterations; the inner
# Adam's state carried from task to task as that code does, mamlkit.adam).
_OMNIGLOT = dict(iterations=60_000, inner_lr=0.4, outer_lr=0.001, inner_steps=1, meta_batch_size=32,
                 shots=1, queries=15)
for _algo in ("maml", "fomaml", "pretrain"):
    DEFAULTS[("omniglot", _algo)] = _OMNIGLOT
DEFAULTS[("omniglot", "reptile")] = dict(iterations=100_000, inner_lr=0.001, outer_lr=1.0, inner_steps=5,
                                         meta_batch_size=5, shots=10, queries=5, inner_optimizer="adam",
                                         inner_batch=10, keep_inner_state=True)
# 20 classes or more: MAML App. A.1 (5 inner steps of α = 0.1 at train and test, meta-batch 16) and the
# Reptile code's 20-way command (inner Adam lr 0.0005, 10 iterations of batch 20, 200k iterations).
# α = 0.1 is the paper's number used with the mean cross-entropy, as α = 0.4 is for 5-way.
WIDE_WAYS = 20
_WIDE_MAML = dict(inner_lr=0.1, inner_steps=5, meta_batch_size=16)
WIDE = {("omniglot", algo): _WIDE_MAML for algo in ("maml", "fomaml", "pretrain")}
WIDE[("omniglot", "reptile")] = dict(iterations=200_000, inner_lr=0.0005, inner_steps=10, inner_batch=20)

# The test protocol: support size, step size, optimizer and steps used to fine-tune at meta-test.
EVAL = {
    "sinusoid": dict(shots=5, inner_lr=0.01, inner_steps=10, inner_optimizer="sgd"),
    "omniglot": dict(shots=1, inner_lr=0.4, inner_steps=3, inner_optimizer="sgd"),
    ("omniglot", "reptile"): dict(shots=1, inner_lr=0.001, inner_steps=50, inner_optimizer="adam"),
}
EVAL_WIDE = {"omniglot": dict(inner_lr=0.1, inner_steps=5), ("omniglot", "reptile"): dict(inner_lr=0.0005)}


def paper_defaults(task: str, algo: str, ways: int = 5) -> dict:
    """The papers' training hyper-parameters for ``task`` and ``algo`` (20-way ones from 20 classes up)."""
    wide = WIDE.get((task, algo), {}) if ways >= WIDE_WAYS else {}
    return {**DEFAULTS[(task, algo)], **wide}


def eval_protocol(task: str, algo: str, ways: int = 5) -> dict:
    """How a model trained for ``task`` with ``algo`` on ``ways`` classes is fine-tuned at meta-test."""
    wide = EVAL_WIDE.get((task, algo), EVAL_WIDE.get(task, {})) if ways >= WIDE_WAYS else {}
    return {**EVAL.get((task, algo), EVAL[task]), **wide}


@dataclass(frozen=True)
class Config:
    """Everything a run needs; ``None`` means "the paper's value for this task and algorithm"."""

    task: str = "sinusoid"
    algo: str = "maml"
    iterations: int | None = None
    inner_lr: float | None = None
    outer_lr: float | None = None
    inner_steps: int | None = None
    meta_batch_size: int | None = None
    shots: int | None = None
    queries: int | None = None
    seed: int = 0
    hidden: tuple = (40, 40)
    init: str = "maml"
    ways: int = 5
    split: str = "maml"
    data_dir: str | None = None
    inner_optimizer: str | None = None
    inner_batch: int | None = None  # Reptile: examples per inner step (None: the whole support set)
    keep_inner_state: bool | None = None  # Reptile with Adam: carry the inner Adam's state across tasks
    anneal: bool = True
    batched: bool | None = None
    val_every: int = 1000
    val_tasks: int = 100
    checkpoint_every: int = 1000

    @property
    def first_order(self) -> bool:
        return self.algo == "fomaml"

    def resolved(self) -> Config:
        """A copy with every ``None`` replaced by its default, after validating the choices."""
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algorithm {self.algo!r}; choose one of {', '.join(ALGOS)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        defaults = {"inner_optimizer": "sgd", "keep_inner_state": False,
                    **paper_defaults(self.task, self.algo, self.ways)}
        cfg = replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        checks = [
            ("iterations", self.iterations >= 1, "an integer >= 1"),
            ("inner_lr", self.inner_lr > 0, "a number > 0 (e.g. 0.01)"),
            ("outer_lr", self.outer_lr > 0, "a number > 0"),
            ("inner_steps", self.inner_steps >= 1, "an integer >= 1"),
            ("meta_batch_size", self.meta_batch_size >= 1, "an integer >= 1"),
            ("shots", self.shots >= 1, "an integer >= 1 (K support points per task)"),
            ("queries", self.queries >= 1, "an integer >= 1"),
            ("val_every", self.val_every >= 1, "an integer >= 1"),
            ("val_tasks", self.val_tasks >= 2, "an integer >= 2 (a mean and its confidence interval)"),
            ("checkpoint_every", self.checkpoint_every >= 1, "an integer >= 1"),
            ("ways", self.ways >= 2, "an integer >= 2 (classes per task)"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"{name} must be {want}, got {getattr(self, name)!r}")
        if self.split not in ("maml", "vinyals"):
            raise ValueError(f"split must be 'maml' or 'vinyals', got {self.split!r}")
        if self.inner_batch is not None and (self.algo != "reptile" or self.inner_batch < 1):
            raise ValueError(f"inner_batch must be an integer >= 1 and is for --algo reptile only (MAML adapts on the "
                             f"whole support set), got {self.inner_batch!r} with algo {self.algo!r}")
        if self.keep_inner_state and (self.algo != "reptile" or self.inner_optimizer != "adam"):
            raise ValueError("keep_inner_state carries Reptile's inner Adam state across tasks: it needs algo "
                             f"'reptile' and inner_optimizer 'adam' (got {self.algo!r}, {self.inner_optimizer!r}); "
                             "pass --fresh-inner-state / keep_inner_state=False otherwise")
        if self.inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {self.inner_optimizer!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
