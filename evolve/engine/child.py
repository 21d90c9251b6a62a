"""A step's child before it trains: its genome, where it came from, whose weights it starts from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evolve.config import RunConfig
from evolve.seeding import rng_for
from genomes import Genome, SearchSpace, genome_class

Read = Callable[[int], "bytes | None"]
"""The stored weights of individual ``step``, or None (missing, corrupt, or a run that does not inherit)."""


@dataclass
class Child:
    genome: Genome
    provenance: dict[str, Any]  # origin, parents, mutation, loser, attempt (generational: generation)
    parent: int | None  # whose weights it starts from, if it inherits


def initial_child(step: int, config: RunConfig, space: SearchSpace) -> Child:
    genome = genome_class(config.genome).initial(rng_for(config.seed, step, "initial"), space)
    return Child(genome, {"origin": "initial", "parents": [], "mutation": None, "loser": None, "attempt": None},
                 None)
