"""The replay of a run's lineage: births and deaths in step order, the live population after each.

Individuals are immutable and a death is applied at its ``killed_at_step``, so replaying the
contiguous prefix of steps gives the same population every time; the views (``evolve.views.tensorboard``,
``evolve.views.lineage``) are drawn from it. A row is the few fields of an individual the views need.
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import dataclass, replace
from typing import Any

from evolve.store.backend import Store
from evolve.store.keys import individual_key, step_of
from evolve.store.records import Individual, Tombstone
from evolve.store.snapshot import ancestry, best_step, first_parent, read_records

RATE_WINDOW = 100  # steps per hour: over the last 100 individuals
CHUNK = 1000  # individuals read at a time (bounds memory on a first sync of a long run)


class ViewError(Exception):
    """The views cannot be built (a logdir of another run, an unusable folder); one line."""


def num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class Row:
    """The few fields of an individual that the whole-run views need (kept in the logdir's cache)."""

    step: int
    time: float  # created_at, unix seconds
    fitness: float | None  # None: not finite, never the best
    parents: tuple[int, ...]
    mutation: str | None
    mutation_params: dict[str, Any] | None
    origin: str | None  # initial, mutation, generation; "unreadable" for a record that does not parse
    status: str | None
    params: int | None
    generation: int | None
    test_accuracy: float | None
    train_seconds: float | None

    @classmethod
    def of(cls, r: Individual) -> Row:
        return cls(step=r.step, time=num(r.created_at) or 0.0, fitness=r.finite_fitness, parents=tuple(r.parents),
                   mutation=r.mutation.name if r.mutation else None,
                   mutation_params=r.mutation.params if r.mutation else None, origin=r.origin, status=r.status,
                   params=r.metrics.params, generation=r.generation, test_accuracy=num(r.test_accuracy),
                   train_seconds=num(r.metrics.train_seconds))

    @classmethod
    def unreadable(cls, step: int, t: float) -> Row:
        """A placeholder for an individual whose record does not parse: counted, never alive, never plotted."""
        return cls(step, t, None, (), None, None, "unreadable", "unreadable", None, None, None, None)

    def to_json(self) -> list[Any]:
        return [getattr(self, name) for name in self.__slots__]

    @classmethod
    def from_json(cls, data: list[Any]) -> Row:
        row = cls(*data)
        return replace(row, parents=tuple(row.parents))


# -- the replay -------------------------------------------------------------------------------


class Replay:
    """Births and deaths in step order: the live population after each step."""

    def __init__(self) -> None:
        self.rows: list[Row] = []  # rows[i].step == i: the contiguous prefix
        self.live: set[int] = set()
        self._ranked: list[tuple[float, int]] = []  # (fitness, -step) of live members with a fitness
        self._clock: list[float] = []  # running maximum of created_at (a monotone wall clock)
        self.best_ever: tuple[float, int] | None = None  # (fitness, step); ties go to the earliest
        self._doomed: set[int] = set()  # killed by an earlier step before their own step is replayed

    @property
    def next_step(self) -> int:
        return len(self.rows)

    def dead(self) -> set[int]:
        return set(range(len(self.rows))) - self.live

    def birth(self, row: Row) -> None:
        if row.step != len(self.rows):
            raise ValueError(f"replay out of order: step {row.step} after {len(self.rows) - 1}")
        self.rows.append(row)
        if row.origin == "unreadable":
            self._clock.append(self._clock[-1] if self._clock else row.time)
            return
        self._clock.append(max(row.time, self._clock[-1]) if self._clock else row.time)
        held = [] if self.best_ever is None else [(self.best_ever[1], self.best_ever[0])]
        if best_step([*held, (row.step, row.fitness)]) == row.step:
            self.best_ever = (row.fitness, row.step)
        if row.step in self._doomed:  # claims run out of order: an earlier step already killed it
            self._doomed.discard(row.step)
            return
        self.live.add(row.step)
        if row.fitness is not None:
            bisect.insort(self._ranked, (row.fitness, -row.step))

    def death(self, step: int) -> None:
        if step >= len(self.rows):
            self._doomed.add(step)
            return
        if step not in self.live:
            return
        self.live.discard(step)
        fitness = self.rows[step].fitness
        if fitness is not None:
            i = bisect.bisect_left(self._ranked, (fitness, -step))
            if i < len(self._ranked) and self._ranked[i] == (fitness, -step):
                del self._ranked[i]

    def best_live(self) -> int | None:
        """The step of the fittest live individual (ties: the earliest)."""
        return -self._ranked[-1][1] if self._ranked else None  # (f, -step) sorts the earliest last

    def scalars(self) -> dict[str, float]:
        """The population's scalars right after the last step replayed."""
        row = self.rows[-1]
        # a doomed individual's killer took a place that the loser, replayed later, never holds
        out: dict[str, float] = {"population/live": float(len(self.live) - len(self._doomed))}
        if self._ranked:
            values = [f for f, _ in self._ranked]
            out["population/best_fitness"] = values[-1]
            out["population/worst_fitness"] = values[0]
            out["population/median_fitness"] = statistics.median(values)
            best_params = self.rows[self.best_live()].params
            if best_params is not None:
                out["population/best_params"] = float(best_params)
        if self.best_ever is not None:
            out["population/best_ever_fitness"] = self.best_ever[0]
        i = len(self.rows) - 1
        window = min(RATE_WINDOW, i)
        if window >= 1 and self._clock[i] > self._clock[i - window]:
            out["population/steps_per_hour"] = window / (self._clock[i] - self._clock[i - window]) * 3600.0
        if row.fitness is not None:
            out["population/child_fitness"] = row.fitness
        if row.train_seconds is not None:
            out["population/child_train_seconds"] = row.train_seconds
        if row.params is not None:
            out["population/child_params"] = float(row.params)
        return out

    def best(self) -> Row | None:
        """The best individual so far, dead or alive (as ``Snapshot.best``)."""
        return None if self.best_ever is None else self.rows[self.best_ever[1]]

    def ancestry(self, step: int) -> list[Row]:
        """Rows of ``step`` and its first-parent ancestors, oldest first."""
        return rows_ancestry(_Index(self.rows), step)


class _Index:
    """rows as a mapping step -> row (rows[i] is step i)."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows

    def get(self, step: int) -> Row | None:
        return self.rows[step] if 0 <= step < len(self.rows) else None


def rows_ancestry(rows: Any, step: int) -> list[Row]:
    """Rows of ``step`` and its first-parent ancestors, oldest first (``rows``: anything with ``get``)."""
    return ancestry(step, lambda s: None if (row := rows.get(s)) is None else (row, first_parent(row.parents)))


def deaths_by_kill(deaths: dict[int, Tombstone]) -> dict[int, list[int]]:
    by_kill: dict[int, list[int]] = {}
    for loser, record in deaths.items():
        by_kill.setdefault(record.killed_at_step, []).append(loser)
    return by_kill


def replay_all(store: Store, upto: int, threads: int) -> Replay:
    """Replay steps ``0..upto-1`` from the store without writing anything (rebuilding the cache)."""
    replay = Replay()
    if upto <= 0:
        return replay
    bad: list[tuple[str, str]] = []
    by_kill = deaths_by_kill(read_records(store, store.list_keys("deaths/"), threads, [], typed=True))
    for start in range(0, upto, CHUNK):
        steps = range(start, min(start + CHUNK, upto))
        records = read_records(store, [individual_key(s) for s in steps], threads, bad, typed=True)
        broken = {step_of(k) for k, _ in bad}
        missing = [s for s in steps if s not in records and s not in broken]
        if missing:
            raise ViewError(f"the logdir shows steps up to {upto - 1} but the store at {store.url} lacks "
                            f"individual {missing[0]}: is this logdir from another store?")
        for s in steps:
            t = replay.rows[-1].time if s else 0.0
            replay.birth(Row.of(records[s]) if s in records else Row.unreadable(s, t))
            for loser in by_kill.get(s, ()):
                replay.death(loser)
    return replay
