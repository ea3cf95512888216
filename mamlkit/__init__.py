"""mamlkit: optimization-based meta-learning (MAML, First-Order MAML, Reptile), taught and tested."""

__version__ = "0.1.0"
