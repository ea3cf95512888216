"""Training configuration: one dataclass, with the papers' hyper-parameters as defaults.

Introduced in notebook 04_maml.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from . import algorithms, families
from .batched import check_max_memory
from .data.omniglot import SPLITS as CHARACTER_SPLITS
from .inner import OPTIMIZERS
from .mamlpp import first_order_at  # DOA's rule, written once

SCHEDULES = ("constant", "cosine")  # the outer step size over training
ALGOS = ("maml", "fomaml", "reptile", "pretrain", *algorithms.REGISTRY)  # the lesson's, then algorithms.py's
MAMLPP_SWITCHES = ("lslr", "msl", "doa")  # each on by default with algo "mamlpp" (see mamlpp.py)
METRIC_ONLY = ("protonet",)  # algorithms for classification families only (no inner loop to run on regression)


def paper_defaults(task: str, algo: str, ways: int = 5) -> dict:
    """The papers' training hyper-parameters for ``task`` and ``algo`` (the family's defaults)."""
    return families.get(task).defaults(algo, ways)


def eval_protocol(task: str, algo: str, ways: int = 5) -> dict:
    """How a model trained for ``task`` with ``algo`` on ``ways`` classes is fine-tuned at meta-test."""
    return families.get(task).protocol(algo, ways)


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
    init: str | None = None  # MLP weights: "torch" (PyTorch's default) or "maml" (the authors' σ = 0.01)
    ways: int = 5
    split: str = "maml"
    data_dir: str | None = None
    inner_optimizer: str | None = None
    inner_batch: int | None = None  # Reptile: examples per inner step (None: the whole support set)
    keep_inner_state: bool | None = None  # Reptile with Adam: carry the inner Adam's state across tasks
    anneal: bool = True  # Reptile: ε annealed linearly to 0
    outer_schedule: str | None = None  # "constant" (the papers) or "cosine" (β·(1 + cos(π·t/T))/2, MAML++)
    lslr: bool | None = None  # MAML++: learned per-layer per-step inner step sizes (default on)
    msl: bool | None = None  # MAML++: the multi-step loss (default on)
    doa: bool | None = None  # MAML++ and MAML: derivative-order annealing (MAML++: on; MAML: the family's)
    msl_iterations: int | None = None  # MAML++: iterations over which MSL's weights anneal (default iterations // 10)
    first_order_iterations: int | None = None  # DOA: first-order iterations (default iterations // 3)
    imaml_lambda: float | None = None  # iMAML: λ of the proximal term λ/2 |φ − θ|² (default: the family's, sine 10)
    cg_steps: int | None = None  # iMAML: conjugate-gradient iterations of the implicit gradient (default 5)
    batched: bool | None = None
    max_memory: float | None = None  # MB for the batched path's graph: the meta-batch in chunks that fit
    workers: int = 1  # per-task loop: tasks adapted at once on this many CPU threads (taskpool.py)
    compiled: bool = False  # batched maml/fomaml: the meta-gradient as one torch.compile'd function (compiled.py)
    val_every: int = 1000
    val_tasks: int = 100
    checkpoint_every: int = 1000

    @property
    def first_order(self) -> bool:
        return self.algo == "fomaml"

    def first_order_at(self, iteration: int) -> bool:
        """Whether the meta-gradient of the update after ``iteration`` updates is first order: FOMAML always,
        MAML with derivative-order annealing (``doa``) for its first ``first_order_iterations``."""
        return self.first_order or (self.algo == "maml" and bool(self.doa)
                                    and first_order_at(iteration, self.first_order_iterations))

    def resolved(self) -> Config:
        """A copy with every ``None`` replaced by its default, after validating the choices."""
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algorithm {self.algo!r}; choose one of {', '.join(ALGOS)}")
        family = families.get(self.task)  # a registered family, or a clear error
        if self.algo in METRIC_ONLY and family.metric != "accuracy":
            raise ValueError(f"algo {self.algo!r} classifies by the distance to class prototypes: it needs a "
                             f"classification task (e.g. --task omniglot), not {family.name!r} ({family.metric})")
        defaults = {"inner_optimizer": "sgd", "keep_inner_state": False, "outer_schedule": "constant",
                    "init": "maml", **paper_defaults(self.task, self.algo, self.ways)}
        cfg = replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})
        cfg.validate()
        return cfg.check_options()

    def check_options(self) -> Config:
        """Refuse an algorithm's own option given with another algorithm (one line, saying what to drop);
        fill MAML++'s defaults."""
        own = {"anneal": ("reptile", self.anneal is False, "--no-anneal")}
        own.update({name: ("mamlpp", getattr(self, name) is not None, f"--no-{name}") for name in ("lslr", "msl")})
        own["msl_iterations"] = ("mamlpp", self.msl_iterations is not None, "--msl-iterations")
        own.update({name: (("mamlpp", "maml"), getattr(self, name) is not None, flag)
                    for name, flag in (("doa", "--no-doa"), ("first_order_iterations", "--first-order-iterations"))})
        own.update({name: ("imaml", getattr(self, name) is not None, f"--{name.replace('_', '-')}")
                    for name in ("imaml_lambda", "cg_steps")})
        for name, (algos, given, flag) in own.items():
            algos = (algos,) if isinstance(algos, str) else algos
            if given and self.algo not in algos:
                names = " or ".join(repr(a) for a in algos)
                raise ValueError(f"{name}={getattr(self, name)!r} ({flag}) is an option of algo {names}, not of "
                                 f"{self.algo!r}: drop it, or use --algo {algos[0]}")
        if self.algo == "imaml":
            from .imaml import check_settings

            check_settings(self.imaml_lambda, self.cg_steps)
        if self.algo == "maml":  # derivative-order annealing: off unless the family or the user turns it on
            cfg = replace(self, doa=bool(self.doa))
            switches = (("doa", "first_order_iterations", cfg.iterations // 3),)
        elif self.algo == "mamlpp":
            cfg = replace(self, **{k: True for k in MAMLPP_SWITCHES if getattr(self, k) is None})
            switches = (("msl", "msl_iterations", cfg.iterations // 10),
                        ("doa", "first_order_iterations", cfg.iterations // 3))
        else:
            return self
        for switch, name, default in switches:
            value = getattr(cfg, name)
            if not getattr(cfg, switch):
                if value is not None:
                    raise ValueError(f"{name} is used by {switch} only: drop --{name.replace('_', '-')} "
                                     f"or --no-{switch}")
                continue
            value = default if value is None else value
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
            cfg = replace(cfg, **{name: value})
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
        if self.split not in CHARACTER_SPLITS:
            raise ValueError(f"split must be one of {', '.join(CHARACTER_SPLITS)}, got {self.split!r}")
        if self.inner_batch is not None and (self.algo != "reptile" or self.inner_batch < 1):
            raise ValueError(f"inner_batch must be an integer >= 1 and is for --algo reptile only (MAML adapts on the "
                             f"whole support set), got {self.inner_batch!r} with algo {self.algo!r}")
        if self.keep_inner_state and (self.algo != "reptile" or self.inner_optimizer != "adam"):
            raise ValueError("keep_inner_state carries Reptile's inner Adam state across tasks: it needs algo "
                             f"'reptile' and inner_optimizer 'adam' (got {self.algo!r}, {self.inner_optimizer!r}); "
                             "pass --fresh-inner-state / keep_inner_state=False otherwise")
        if self.outer_schedule not in SCHEDULES:
            raise ValueError(f"outer_schedule must be one of {', '.join(SCHEDULES)}, got {self.outer_schedule!r}")
        if self.outer_schedule != "constant" and self.algo == "reptile":
            raise ValueError("outer_schedule is for the outer Adam of maml, fomaml and pretrain; Reptile anneals "
                             "its ε with --anneal")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be an integer >= 1 (tasks adapted in parallel), got {self.workers!r}")
        if self.workers > 1 and (self.algo not in ("maml", "fomaml") or self.batched):
            raise ValueError(f"workers runs the per-task loop of maml and fomaml on several cores; with algo "
                             f"{self.algo!r}{' and --batched' if self.batched else ''} drop --workers")
        if self.compiled is not False and (self.compiled is not True or self.algo not in ("maml", "fomaml")
                                           or self.batched is False or self.workers > 1 or self.max_memory is not None
                                           or self.inner_optimizer != "sgd"):
            raise ValueError(f"compile runs the batched meta-gradient of maml and fomaml with SGD inner steps; with "
                             f"algo {self.algo!r}, inner optimizer {self.inner_optimizer!r}, batched {self.batched}, "
                             f"workers {self.workers}, max_memory {self.max_memory} drop --compile (or those options)")
        check_max_memory(self.max_memory)
        if self.max_memory is not None and self.algo not in ("maml", "fomaml"):
            raise ValueError(f"max_memory bounds the batched graph of maml and fomaml; algo {self.algo!r} does not "
                             "use it: drop --max-memory")
        if self.inner_optimizer not in OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.inner_optimizer!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}")
        d = {"outer_schedule": "constant", **d}  # checkpoints from before the setting trained with a constant β
        if d.get("algo") == "maml" and d.get("doa") is None:  # MAML from before its DOA option: second order
            d["doa"] = False
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
