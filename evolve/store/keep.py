"""Whose weights are kept: one rule, shared by the in-run collector (``evolve.engine.collector``) and
``evolve gc`` (``evolve.store.sweep``).

A dead individual's weights are kept while it is among the run's best ``keep_best`` ever (dead or
alive: ``evolve best --export``, ``finalize --start weights``, the ``top`` ensemble and a final
training from the weights read them), or pinned (``pins/``: a command will read them). Live
individuals' weights are always kept; so are those a step in flight inherits, and those dead for
less than a grace period (a stale view may still choose them as a parent): each collector
measures those two its own way.

"Best" is the rule every reader uses (``evolve.store.snapshot.best_step`` is ``BestEver(1)``): the
highest fitness, of equals the earliest step; a NaN or missing fitness never counts.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable


class BestEver:
    """The best ``k`` steps so far, fed one (step, fitness) at a time: O(log k) each."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._entries: list[tuple[float, int]] = []  # (fitness, -step), ascending: the worst kept first

    def add(self, step: int, fitness: float | None) -> None:
        if fitness is None or fitness != fitness:
            return
        entry = (float(fitness), -step)
        if len(self._entries) < self.k or entry > self._entries[0]:
            bisect.insort(self._entries, entry)
            del self._entries[:max(0, len(self._entries) - self.k)]

    def steps(self) -> set[int]:
        return {-s for _, s in self._entries}


def best_ever(candidates: Iterable[tuple[int, float | None]], k: int) -> set[int]:
    """The steps of the best ``k`` of (step, fitness) pairs."""
    best = BestEver(k)
    for step, fitness in candidates:
        best.add(step, fitness)
    return best.steps()
