"""What training a child produced: the one result type the trainer, the fitnesses and the worker share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    """What training a child produced (JSON-ready apart from ``weights``)."""

    fitness: float
    status: str = "ok"
    reason: str | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    final_loss: float | None = None
    params: int = 0
    flops: int = 0
    inherited: float = 0.0
    train_seconds: float = 0.0
    batches: int = 0
    eval_seconds: float = 0.0
    device: str = "cpu"
    weights: bytes | None = field(default=None, repr=False)
    extra: dict[str, Any] | None = None  # your own fitness's metrics (evolve.training.fitness)

    def metrics(self) -> dict[str, Any]:
        """The measurements that are not already top-level fields of an individual's record (your own
        fitness's metrics under their names, prefixed ``user_`` where one is taken)."""
        top = {"weights", "fitness", "status", "reason", "val_accuracy", "test_accuracy", "extra"}
        out = {k: v for k, v in self.__dict__.items() if k not in top}
        for key, value in (self.extra or {}).items():
            out[f"user_{key}" if key in out or key in top else key] = value
        return out
