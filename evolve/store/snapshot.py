"""Read-only views of a run for people: status, the best individual, lineage."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from evolve.store.backend import CorruptRecord, Store
from evolve.store.keep import BestEver
from evolve.store.keys import step_of
from evolve.store.records import RecordError, model_for, parse

T = TypeVar("T")


def read_records(store: Store, keys: Iterable[str], threads: int = 8,
                 unreadable: list[tuple[str, str]] | None = None, typed: bool = False) -> dict[int, Any]:
    """The JSON records at ``keys`` keyed by step (missing ones left out); remote reads in parallel.

    Each is checked against its model (``evolve.store.records``); with ``typed`` the models are
    returned, else the JSON objects. With ``unreadable`` (a list), records that do not parse or
    lack a field every reader relies on are skipped and listed there as ``(key, reason)``
    (docs/ARCHITECTURE.md: readers skip, ``evolve check`` reports); without it they raise ``CorruptRecord``.
    """
    keys = [k for k in keys if k.endswith(".json")]

    def one(key: str) -> tuple[int, Any]:
        try:
            data = store.read_json(key)
            model = model_for(key)
            if data is None or model is None:
                return step_of(key), data
            try:
                record = parse(model, data)
            except RecordError as exc:
                raise CorruptRecord(key, str(exc)) from None
        except CorruptRecord as exc:
            if unreadable is None:
                raise
            unreadable.append((key, exc.reason))
            return step_of(key), None
        return step_of(key), record if typed else data

    if store.local or threads <= 1 or len(keys) < 8:
        pairs = [one(k) for k in keys]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            pairs = list(pool.map(one, keys))
    return {step: record for step, record in pairs if record is not None}


def best_step(candidates: Iterable[tuple[int, float | None]]) -> int | None:
    """The best-individual rule, the one every reader uses: the highest fitness, and of equals the
    earliest step; ``candidates`` are (step, fitness) pairs, a None or NaN fitness never wins."""
    best = BestEver(1)
    for step, fitness in candidates:
        best.add(step, fitness)
    return next(iter(best.steps()), None)


def ancestry(step: int, lookup: Callable[[int], tuple[T, int | None] | None]) -> list[T]:
    """The one ancestry walk: ``step`` and its first parents back to the initial population, oldest
    first. ``lookup(step)`` gives (the individual, its first parent or None), or None when absent;
    the walk stops there, or at a step seen before (a corrupt store)."""
    chain: list[T] = []
    seen: set[int] = set()
    current: int | None = step
    while current is not None and current not in seen and (found := lookup(current)) is not None:
        seen.add(current)
        item, current = found[0], found[1]
        chain.append(item)
    return chain[::-1]


def first_parent(parents: list[int] | None) -> int | None:
    return parents[0] if parents else None


@dataclass
class Snapshot:
    """Every individual and tombstone of a store, read once.

    Records that do not parse are skipped (docs/ARCHITECTURE.md: readers skip, ``evolve check``
    reports); ``unreadable`` lists them as ``(key, reason)`` so a view can warn.
    """

    individuals: dict[int, dict[str, Any]]
    deaths: dict[int, dict[str, Any]]
    claims: set[int] = field(default_factory=set)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def read(cls, store: Store) -> Snapshot:
        unreadable: list[tuple[str, str]] = []
        return cls(individuals=read_records(store, store.list_keys("individuals/"), unreadable=unreadable),
                   deaths=read_records(store, store.list_keys("deaths/"), unreadable=unreadable),
                   claims={step_of(k) for k in store.list_keys("claims/") if k.endswith(".json")},
                   unreadable=unreadable)

    def live(self) -> list[int]:
        return sorted(s for s in self.individuals if s not in self.deaths)

    def best(self, live_only: bool = False) -> dict[str, Any] | None:
        steps = self.live() if live_only else sorted(self.individuals)
        step = best_step((s, self.individuals[s]["fitness"]) for s in steps)
        return None if step is None else self.individuals[step]

    def ancestry(self, step: int) -> list[dict[str, Any]]:
        """The individual and its ancestors, oldest first."""
        def lookup(s: int) -> tuple[dict[str, Any], int | None] | None:
            record = self.individuals.get(s)
            return None if record is None else (record, first_parent(record.get("parents")))

        return ancestry(step, lookup)


def status(snapshot: Snapshot, population: int, total_steps: int) -> dict[str, Any]:
    ind = snapshot.individuals
    skipped = {step_of(k) for k, _ in snapshot.unreadable if k.startswith("individuals/")}  # done, unreadable
    live = snapshot.live()
    fitness = [ind[s]["fitness"] for s in live]
    children = [r for s, r in ind.items() if s >= population]
    times = sorted(r["created_at"] for r in ind.values() if "created_at" in r)
    hours = (times[-1] - times[0]) / 3600 if len(times) > 1 else 0.0
    per_worker: dict[str, dict[str, float]] = {}
    for record in ind.values():
        row = per_worker.setdefault(record.get("worker", "?"), {"steps": 0, "train_s": 0.0, "adopted": 0})
        row["steps"] += 1
        row["train_s"] += float(record.get("metrics", {}).get("train_seconds", 0.0))
        row["adopted"] += int(bool(record.get("adopted")))
    initial = [ind[s]["fitness"] for s in range(population) if s in ind]
    return {
        "done": len(ind),
        "total": total_steps,
        "in_flight": len([s for s in snapshot.claims if s not in ind and s not in skipped]),
        "live": len(live),
        "best_fitness": max(fitness, default=None),
        "median_fitness": statistics.median(fitness) if fitness else None,
        "initial_best": max(initial, default=None),
        "children": len(children),
        "failed": sum(1 for r in ind.values() if r.get("status") != "ok"),
        "adopted": sum(1 for r in ind.values() if r.get("adopted")),
        "steps_per_hour": (len(times) - 1) / hours if hours else None,
        "workers": per_worker,
        "unreadable": len(snapshot.unreadable),  # records skipped: `evolve check --repair` moves them aside
    }
