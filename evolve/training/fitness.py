"""Your own fitness: evolve architectures for a task the built-in image trainer does not cover.

Name a function in the config (``fitness = "package.module:function"``, with ``input_shape`` and
``num_classes``: the networks' input and outputs), or pass it to ``evolve.run(fitness=function)``.
Each worker imports it by that name, so on a Ray cluster the module must be installed on every
node; nothing but the name is written into the store. It is called once per child::

    def fitness(model: torch.nn.Module, inherited: dict[str, torch.Tensor] | None,
                rng: torch.Generator, context: FitnessContext) -> float | tuple[float, dict[str, float]]

* ``model``: the child's network on the CPU, initialised from the step's seed and already holding
  what it inherits from its parent's weights (``inherited``, the parent's tensors, or None), as the
  built-in trainer starts a child; train it in place: its state afterwards is the child's weights,
  which its own children inherit.
* ``rng``: a generator seeded from the run seed and the step (batch order, augmentation), so a
  step replays alike.
* ``context``: the step's seed, the mutation that made the child, its genome, the run's config, and
  ``context.hparams``: every gene the child carries (the run's ``[hparams]``, whatever their names).

It returns the fitness, **maximised** (return ``-loss`` for a loss), and optionally a dict of
metrics recorded with the child. A fitness that raises, or returns something that is not a finite
number, fails that child: it is recorded with ``status = "failed"``, the reason, and a fitness of
``-inf``, so it ranks below every finite fitness (a tournament picks it only against another failed
child); the worker goes on.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evolve.config import ConfigError, RunConfig
from evolve.training.outcome import Outcome
from genomes import Genome, Mutation, SearchSpace
from genomes.base import import_attribute
from genomes.hparams import genes_of

Fitness = Callable[..., Any]
FAILED = -math.inf  # what a failed child's fitness is: below every finite fitness


@dataclass(frozen=True)
class FitnessContext:
    seed: int
    mutation: Mutation | None
    genome: Genome
    config: RunConfig

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.config.input_shape)  # type: ignore[arg-type]

    @property
    def num_classes(self) -> int:
        return int(self.config.num_classes or 0)

    @property
    def hparams(self) -> dict[str, Any]:
        """The child's gene values, by name (``genomes.hparams``)."""
        return genes_of(self.genome)


def import_fitness(name: str) -> Fitness:
    """The function ``name`` (``package.module:function``) names; ConfigError says why not."""
    module_name, _, attr = name.partition(":")
    try:
        target = import_attribute(name)
    except AttributeError:
        raise ConfigError(f"fitness: module {module_name!r} has no {attr!r} (from {name!r})") from None
    except Exception as exc:  # noqa: BLE001 - an ImportError, or the module's own error on import
        raise ConfigError(f"fitness: cannot import module {module_name!r} of {name!r}: "
                          f"{type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise ConfigError(f"fitness: {name!r} is a {type(target).__name__}, not a function")
    return target


def name_of(fn: Fitness) -> str | None:
    """``module:qualname`` when importing that gives ``fn`` back (what a worker elsewhere can do), else None."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    name = f"{module}:{qualname}"
    try:
        return name if import_fitness(name) is fn else None
    except ConfigError:
        return None


class FunctionEvaluator:
    """The evaluator for your own fitness (``evolve.training.evaluate.Evaluator``)."""

    def __init__(self, config: RunConfig, space: SearchSpace, fn: Fitness | None = None) -> None:
        self.config, self.space = config, space
        self.fn = fn if fn is not None else import_fitness(config.fitness)

    def evaluate(self, genome: Genome, parent_weights: bytes | None, seed: int,
                 mutation: Mutation | None = None) -> Outcome:
        import torch

        from evolve.training.train import build_module, count_flops, weights_from_bytes, weights_to_bytes

        shape, outputs = self.space.input_shape, self.space.num_classes
        params = genome.param_count(shape, outputs)
        if params > self.space.max_params:
            return Outcome(fitness=FAILED, status="failed", reason=f"over max_params ({params:,})", params=params)
        model = build_module(genome, shape, outputs, seed)
        inherited, fraction = None, 0.0
        if parent_weights is not None and self.config.train.inherit_weights:
            inherited = weights_from_bytes(parent_weights)
            fraction = genome.inherit(model, inherited, mutation).fraction
        flops = count_flops(model, torch.zeros(1, *shape))
        context = FitnessContext(seed=seed, mutation=mutation, genome=genome, config=self.config)
        started = time.perf_counter()
        try:
            value = self.fn(model, inherited, torch.Generator().manual_seed(seed), context)
        except Exception as exc:  # noqa: BLE001 - the user's code: the child fails, the worker goes on
            where = traceback.extract_tb(exc.__traceback__)[-1]
            return Outcome(fitness=FAILED, status="failed", params=params, flops=flops, inherited=fraction,
                           reason=f"fitness raised {type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"[:500],
                           train_seconds=time.perf_counter() - started)
        seconds = time.perf_counter() - started
        fitness, metrics, problem = _unpack(value)
        if problem is not None:
            return Outcome(fitness=FAILED, status="failed", reason=problem, params=params, flops=flops,
                           inherited=fraction, train_seconds=seconds)
        return Outcome(fitness=fitness, params=params, flops=flops, inherited=fraction, train_seconds=seconds,
                       val_accuracy=_number(metrics.get("val_accuracy")), test_accuracy=None,
                       weights=weights_to_bytes(model), extra={k: v for k, v in metrics.items()
                                                              if k != "val_accuracy"})


def _unpack(value: Any) -> tuple[float, dict[str, Any], str | None]:
    """(fitness, metrics, why it is unusable or None) from what a fitness function returned."""
    metrics: Any = {}
    if isinstance(value, tuple) and len(value) == 2:
        value, metrics = value
    if not isinstance(metrics, dict):
        return FAILED, {}, f"fitness returned metrics of type {type(metrics).__name__}, not a dict"
    number = _number(value)
    if number is None or not math.isfinite(number):
        return FAILED, {}, f"fitness returned {value!r}, not a finite number"
    clean = {str(k): v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
    return number, clean, None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)  # a Python, NumPy or 0-d torch number
    except (TypeError, ValueError):
        return None
