"""How a child's fitness is measured: real training, or a cheap synthetic score for engine tests."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Protocol

from evolve.config import RunConfig, is_table
from evolve.seeding import rng_for
from evolve.training.datasets import run_dataset
from evolve.training.fitness import FunctionEvaluator
from evolve.training.outcome import Outcome
from evolve.training.tabular import TableEvaluator
from genomes import Genome, Mutation, SearchSpace

if TYPE_CHECKING:
    from evolve.training.train import Trainer


class Evaluator(Protocol):
    """Measures a child. An evaluator may also set ``overlaps_writes = False`` (default True): the
    worker then writes each child before it selects the next step's parent. Overlapping a child's
    write with the next training pays when training takes far longer than the write, but the next
    selection cannot see that child; for a lookup (``evolve.training.tabular``) it would only add
    that lag, one step per worker."""

    def evaluate(self, genome: Genome, parent_weights: bytes | None, seed: int,
                 mutation: Mutation | None = None) -> Outcome: ...


class TrainingEvaluator:
    """Loads the dataset onto the device once, then trains each child on it."""

    def __init__(self, config: RunConfig, space: SearchSpace) -> None:
        self.config = config
        self.space = space
        self._trainer: Trainer | None = None

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            from evolve.training.train import Trainer, resolve_device, to_device

            device = resolve_device(self.config.train.device)
            data = run_dataset(self.config)
            self._trainer = Trainer(to_device(data, device), self.config.train, device, self.space.max_params)
        return self._trainer

    def evaluate(self, genome: Genome, parent_weights: bytes | None, seed: int,
                 mutation: Mutation | None = None) -> Outcome:
        from evolve.training.train import weights_from_bytes

        weights = weights_from_bytes(parent_weights) if parent_weights is not None else None
        return self.trainer.train(genome, weights, seed, mutation)


class SyntheticEvaluator:
    """A deterministic stand-in for training: bigger, deeper genomes score higher, with seeded noise.

    It exercises the store, selection and scheduling at thousands of steps per minute;
    it produces no weights.
    """

    def __init__(self, space: SearchSpace, seconds: float = 0.0) -> None:
        self.space = space
        self.seconds = seconds

    def evaluate(self, genome: Genome, parent_weights: bytes | None, seed: int,
                 mutation: Mutation | None = None) -> Outcome:
        start = time.perf_counter()
        if self.seconds:
            time.sleep(self.seconds)
        params = genome.param_count(self.space.input_shape, self.space.num_classes)
        if params > self.space.max_params:
            return Outcome(fitness=0.0, status="failed", reason="over max_params", params=params)
        noise = rng_for(seed, "synthetic").gauss(0.0, 0.02)
        score = min(1.0, max(0.0, math.log10(params + 10) / math.log10(self.space.max_params + 10) + noise))
        return Outcome(fitness=score, val_accuracy=score, params=params,
                       train_seconds=time.perf_counter() - start)


def make_evaluator(config: RunConfig, space: SearchSpace) -> Evaluator:
    if config.fitness == "synthetic":
        return SyntheticEvaluator(space, config.synthetic_seconds)
    if is_table(config.fitness):
        return TableEvaluator(config, space)
    if config.fitness != "train":
        return FunctionEvaluator(config, space)
    return TrainingEvaluator(config, space)
