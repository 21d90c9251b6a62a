"""How a step's child is bred: one breeder per mode, behind one small protocol the worker calls.

* :class:`SteadyState` (tournament and aging evolution, Real et al.): the step selects a parent and
  a loser from the live population (settled through the store, so every worker agrees), kills the
  loser and mutates the parent; the child inherits the parent's weights. Random sampling is the
  same step with no parent: the child is a uniform draw from the space (``origin = "sample"``).
* :class:`evolve.engine.generational.Generational` (Genetic CNN, Xie & Yuille): a whole generation is bred
  at once and settled through the store; each step is one member, replacing its slot's
  predecessor; a genome seen before has its fitness averaged over its evaluations.

Steps below the population size are the initial individuals in both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from evolve.config import RunConfig
from evolve.engine.child import Child, Read, initial_child
from evolve.engine.generational import Generational
from evolve.engine.selection import make_strategy
from evolve.seeding import rng_for
from evolve.training.outcome import Outcome
from genomes import Genome, SearchSpace, genome_class, genome_from_json


class Breeder(Protocol):
    claim_chooser: Callable[..., Any] | None
    """Passed to ``Population.claim_next``: a step's selection written with its claim (or None)."""
    collects: bool
    """Whether dead individuals' weights may be deleted during the run (``evolve.engine.collector`` knows
    which parents a steady-state step reads, from its kill marks)."""

    def waits_for(self, step: int) -> range:
        """The steps that must be done before child ``step`` may start (``Population.ready``)."""
        ...

    def child(self, step: int) -> Child | None:
        """Step's child; None while it cannot be bred yet (too few live to select from: the worker
        finishes the lapsed steps that hold the others, waits a moment and asks again)."""
        ...

    def inherited(self, provenance: dict[str, Any], parent: int | None, read: Read) -> bytes | None: ...

    def fitness(self, step: int, genome_hash: str, outcome: Outcome) -> tuple[float, dict[str, Any]]:
        """The fitness recorded for the child, and any fields it adds to the record."""
        ...


PARSED_KEPT = 64


class SteadyState:
    """Tournament or aging selection, one child per step: select, kill the loser, mutate the parent."""

    collects = True

    def __init__(self, config: RunConfig, space: SearchSpace, population: Any) -> None:
        self.config, self.space, self.population = config, space, population
        self.strategy = make_strategy(config.selection, config.sample_size)
        self.claim_chooser = self.chooser
        self._parsed: dict[int, Genome] = {}  # recent parents' genomes (frozen): a good one is chosen again and again

    def _genome(self, step: int) -> Genome:
        genome = self._parsed.pop(step, None) or genome_from_json(self.population.individual(step)["genome"])
        self._parsed[step] = genome  # most recent last
        if len(self._parsed) > PARSED_KEPT:
            del self._parsed[next(iter(self._parsed))]
        return genome

    def waits_for(self, step: int) -> range:
        return range(self.config.population)  # the initial population

    def chooser(self, step: int) -> Callable[[list[Any], int], Any]:
        """Attempt ``attempt``'s (parent, loser) for ``step`` from the live members, drawn from the run
        seed, the step and the attempt alone; None while too few are alive."""
        strategy, seed = self.strategy, self.config.seed

        def choose(live, attempt):
            if len(live) < strategy.min_live:
                return None
            return strategy.choose(live, rng_for(seed, step, "select", attempt))

        return choose

    def child(self, step: int) -> Child | None:
        cfg, pop = self.config, self.population
        if step < cfg.population:
            return initial_child(step, cfg, self.space)
        settled = pop.settle_selection(step, self.chooser(step))
        if settled is None:
            return None
        choice, attempt = settled
        if choice.parent is None:  # random sampling: a fresh draw, no parent
            genome = genome_class(cfg.genome).sample(rng_for(cfg.seed, step, "mutate"), self.space)
            return Child(genome, {"origin": "sample", "parents": [], "mutation": {"name": "sample", "params": {}},
                                  "loser": choice.loser, "attempt": attempt}, None)
        parent = self._genome(choice.parent)
        genome, mutation = parent.mutate(rng_for(cfg.seed, step, "mutate"), self.space)
        return Child(genome, {"origin": "mutation", "parents": [choice.parent], "mutation": mutation.to_json(),
                              "loser": choice.loser, "attempt": attempt}, choice.parent)

    def inherited(self, provenance: dict[str, Any], parent: int | None, read: Read) -> bytes | None:
        return None if parent is None else read(parent)

    def fitness(self, step: int, genome_hash: str, outcome: Outcome) -> tuple[float, dict[str, Any]]:
        return outcome.fitness, {}


def make_breeder(config: RunConfig, space: SearchSpace, population: Any, worker_id: str) -> Breeder:
    if config.selection == "generational":
        return Generational(config, space, population, worker_id)
    return SteadyState(config, space, population)
