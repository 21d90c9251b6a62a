"""Garbage collection during a run: the weights of dead individuals that nobody can need any more.

Each worker collects what it killed, after a grace period on its own clock. Individual D's
weights are deleted when all of these hold:

* D has been dead for the grace: ``grace_seconds`` (2 s, or twice ``refresh_seconds``: a worker
  whose view was stale when it chose D as a parent reads D's weights right after choosing) plus
  twice the slowest of this worker's last 64 selections (from its view's refresh to its parent's
  weights read: on a slow store that read can come seconds after the choice, and every worker
  shares the store, so its own selections say how slow the others' are);
* D is not among the best ``keep_best`` individuals ever finished (dead or alive: aging kills
  the best; ``evolve best --export``, the views and a final training from the weights read them);
* no step in flight inherits from D: kill marks name each step's parent, and a step in flight
  with no kill mark older than the grace (a holder that died between its selection and its
  tombstone) has its selection records read, since its adopter will replay them;
* no ``pins/<D>-*.json`` record names D (other commands pin what they will read).

What is kept is looked at again after the next step, so a D that leaves the top K is deleted
then. A worker killed with items in its queue leaves their weights behind (``evolve gc``
finds them). Losing trainers already delete their own duplicate weights; an adopter whose
child wins deletes the weights that the step's earlier holders wrote.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evolve.engine.population import Population
from evolve.store.backend import Store
from evolve.store.keep import BestEver
from evolve.store.keys import PAD, individual_key, step_of
from evolve.store.marks import selections_of

log = logging.getLogger("evolve.engine.collector")

SELECTIONS_KEPT = 64


@dataclass
class Collector:
    store: Store
    population: Population
    keep_best: int
    grace_seconds: float
    deleted: int = 0
    _queue: dict[int, float] = field(default_factory=dict)  # dead step -> when we queued it (our clock)
    _best: BestEver | None = None  # the best keep_best so far (evolve.store.keep: gc keeps the same)
    _ranked: int = 0  # how many of the view's done marks _best reflects
    _first_seen: dict[int, float] = field(default_factory=dict)  # step in flight -> when we first saw it
    _pins: set[int] = field(default_factory=set)
    _pins_at: float = float("-inf")
    later: Callable[[Callable[[], None]], Any] | None = None  # where deletions go to be done later (None: now)
    _selections: collections.deque = field(default_factory=lambda: collections.deque(maxlen=SELECTIONS_KEPT))

    def observe(self, select_seconds: float) -> None:
        """One of this worker's steps read its parent's weights ``select_seconds`` after its view's refresh began."""
        if select_seconds == select_seconds and select_seconds != float("inf"):  # a view never refreshed says nothing
            self._selections.append(max(0.0, float(select_seconds)))

    def grace(self) -> float:
        """How long a dead individual's weights stay: the base grace, lengthened by slow selections."""
        return self.grace_seconds + 2 * max(self._selections, default=0.0)

    def collect(self, finished: bool = False) -> int:
        """Delete what is due; the number of weight files deleted. ``finished``: every step has its
        child, so nobody will choose a parent again and no grace is needed."""
        pop = self.population
        now = time.monotonic()
        for loser in pop.killed:
            self._queue.setdefault(loser, now)
        pop.killed.clear()
        grace = self.grace()
        due = [d for d, since in self._queue.items() if finished or now - since >= grace]
        if not due:
            return 0
        keep = self._best_steps() | self._inherited(now, grace) | self._pinned()
        count = 0
        for dead in due:
            if dead in keep:
                continue
            del self._queue[dead]
            if self.later is None:
                count += self._delete_weights(dead)
            else:
                self.later(lambda dead=dead: self._delete_later(dead))
        self.deleted += count
        return count

    def _delete_later(self, step: int) -> None:
        try:
            self.deleted += self._delete_weights(step)
        except Exception as exc:  # noqa: BLE001 - a missed deletion only costs storage (evolve gc finds it)
            log.warning("weights of dead individual %d not deleted: %s", step, exc)

    def _best_steps(self) -> set[int]:
        done = self.population.view.done
        if self._best is None:
            self._best = BestEver(self.keep_best)
        for step in itertools.islice(reversed(done), len(done) - self._ranked):  # the view only grows
            self._best.add(step, done[step].fitness)
        self._ranked = len(done)
        return self._best.steps()

    def _inherited(self, now: float, grace: float) -> set[int]:
        """Parents of the steps in flight, read from their selections where no kill mark says."""
        parents = set()
        flight = self.population.in_flight()
        self._first_seen = {s: self._first_seen.get(s, now) for s in flight}
        for step, parent in flight.items():
            if parent is not None:
                parents.add(parent)
            elif now - self._first_seen[step] >= grace:
                parents |= {s["parent"] for s in selections_of(self.store, step) if isinstance(s.get("parent"), int)}
        return parents

    def _pinned(self) -> set[int]:
        """Pinned steps, listed at most once per grace period (longer on a slow store, as the grace is)."""
        now = time.monotonic()
        if now - self._pins_at >= self.grace():
            self._pins = {step_of(k) for k in self.store.list_keys("pins/")}
            self._pins_at = now
        return self._pins

    def _delete_weights(self, step: int) -> int:
        record = self.population.view.individuals.get(step) or self.store.read_json(individual_key(step))
        info = (record or {}).get("weights") or {}
        key = info.get("key")
        if not key:
            return 0
        self.store.delete(key)
        log.debug("deleted the weights of dead individual %d", step)
        return 1


def drop_strays(store: Store, step: int, kept: str | None) -> int:
    """Delete weights of ``step`` that its recorded child does not name (earlier holders' leftovers)."""
    count = 0
    for key in store.list_keys(f"weights/{step:0{PAD}d}-"):
        if key != kept:
            store.delete(key)
            count += 1
    return count
