"""Who becomes a parent and who dies: tournament (Real et al. 2017), aging (Real et al. 2019), and
random sampling, the baseline every search is measured against.

Strategies see plain (step, fitness) pairs of live individuals, sorted by step, and a seeded RNG;
they know nothing of stores, so the same choice is made by whoever replays a step. A choice costs
the same at any population size: the sample is drawn as indices (the same draws as sampling the
list itself), with no copy of the live list, and the oldest is the first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Member:
    step: int
    fitness: float


@dataclass(frozen=True)
class Choice:
    parent: int | None  # None: the child is drawn from the space, not bred (random sampling)
    loser: int


class Strategy(Protocol):
    min_live: int

    def choose(self, live: Sequence[Member], rng: random.Random) -> Choice:
        """``live``: sorted by step, as ``Population.live`` gives them."""


class Tournament:
    """A random pair: the worse is killed, the better is the parent (ties broken at random)."""

    min_live = 2

    def choose(self, live: Sequence[Member], rng: random.Random) -> Choice:
        a, b = (live[i] for i in rng.sample(range(len(live)), 2))
        winner, loser = (a, b) if a.fitness >= b.fitness else (b, a)
        return Choice(parent=winner.step, loser=loser.step)


class Aging:
    """Regularized evolution: the best of a random sample is the parent; the oldest dies (even if it is the parent)."""

    def __init__(self, sample_size: int) -> None:
        self.sample_size = sample_size
        self.min_live = max(2, sample_size)

    def choose(self, live: Sequence[Member], rng: random.Random) -> Choice:
        sample = [live[i] for i in rng.sample(range(len(live)), self.sample_size)]
        parent = max(sample, key=lambda m: (m.fitness, -m.step))
        return Choice(parent=parent.step, loser=live[0].step)


class RandomSampling:
    """No selection: every child is a fresh uniform draw from the space, and the oldest dies.

    The population plays no part in what is drawn; killing the oldest keeps every step's record alike
    (one death per child, ``N`` live), so random sampling runs through the same engine, store and
    views as the search it is measured against, at the same number of evaluations.
    """

    min_live = 1

    def choose(self, live: Sequence[Member], rng: random.Random) -> Choice:
        return Choice(parent=None, loser=live[0].step)


def make_strategy(name: str, sample_size: int) -> Strategy:
    if name == "tournament":
        return Tournament()
    if name == "aging":
        return Aging(sample_size)
    if name == "random":
        return RandomSampling()
    raise ValueError(f"selection {name!r} is not a steady-state strategy (expected tournament, aging or random)")
