"""`evolve check`: verify a store against the invariants of docs/ARCHITECTURE.md.

1. every record parses; every child's parent exists;
2. no individual died twice; no step has two children or two deaths;
3. live = N - steps in flight; after a clean stop, live = N;
4. a finished run has exactly N + steps individuals, none beyond;
5. every log mark (what workers select from) agrees with the record it was derived from;
6. every record of what was measured after the search parses; ``evolve finalize``'s name weights that are there.

``CheckReport.damaged`` lists the records that do not parse, for ``evolve check --repair``
(``evolve.store.repair``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from evolve.store.backend import CorruptRecord, Store
from evolve.store.keys import FINALIZE_PREFIX, parse_mark, step_of
from evolve.store.records import Individual, RecordError, Tombstone, model_for, parse

PREFIXES = ("individuals/", "deaths/", "claims/", "selections/", "adoptions/")


@dataclass
class CheckReport:
    population: int
    total_steps: int
    individuals: int = 0
    live: int = 0
    in_flight: int = 0
    deaths: int = 0
    violations: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # the keys of records that do not parse (`check --repair`)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def finished(self) -> bool:
        return self.individuals == self.total_steps and self.in_flight == 0


def _read_all(store: Store, prefix: str, report: CheckReport,
              unreadable: set[int] | None = None) -> dict[int, Any]:
    """Every usable record under ``prefix`` as its model, by step; one violation per record that does
    not parse or is malformed (its model names the field). The steps of those go to ``unreadable``."""
    records = {}
    model = model_for(prefix)
    for key in store.list_keys(prefix):
        if not key.endswith(".json"):
            continue
        try:
            data = store.read_json(key)
            if data is not None:
                records[step_of(key)] = parse(model, data)
            continue
        except CorruptRecord as exc:
            report.violations.append(f"{key}: does not parse ({exc.reason})")
        except RecordError as exc:
            report.violations.append(f"{key}: malformed ({exc})")
        report.damaged.append(key)
        if unreadable is not None:
            unreadable.add(step_of(key))
    return records


def check_store(store: Store, population: int, total_steps: int) -> CheckReport:
    report = CheckReport(population=population, total_steps=total_steps)
    v = report.violations
    # an individual whose record does not parse still exists (its step was done): it is reported
    # once above, and counted as present below so it does not also show up as a missing parent etc.
    unreadable: set[int] = set()
    individuals: dict[int, Individual] = _read_all(store, "individuals/", report, unreadable)
    deaths: dict[int, Tombstone] = _read_all(store, "deaths/", report)
    claims = set(_read_all(store, "claims/", report))
    present = set(individuals) | unreadable
    report.individuals, report.deaths = len(present), len(deaths)

    for step, record in individuals.items():
        if record.step != step:
            v.append(f"individuals/{step}: records step {record.step!r}")
        for parent in record.parents:
            if parent not in present:
                v.append(f"individual {step}: parent {parent} does not exist")
        if step >= population and not record.parents and record.origin != "sample":
            v.append(f"individual {step}: a child with no parent")
        if step >= total_steps:
            v.append(f"individual {step}: beyond the run's {total_steps} steps")

    killed_at = Counter()
    for dead, record in deaths.items():
        if dead not in present:
            v.append(f"death of {dead}: no such individual")
        step = record.killed_at_step
        killed_at[step] += 1
        child = individuals.get(step)
        if child is not None and child.loser != dead:
            v.append(f"death of {dead}: step {step}'s child records loser {child.loser!r}")
    for step, count in killed_at.items():
        if count > 1:
            v.append(f"step {step} killed {count} individuals")

    killing_steps = set(killed_at)
    unfinished_initial = {s for s in range(min(population, total_steps)) if s not in present}
    in_flight = {s for s in killing_steps if s not in present} | unfinished_initial
    report.in_flight = len(in_flight)
    report.live = len(present - set(deaths))
    if report.live != population - report.in_flight:
        v.append(f"live count {report.live} != population {population} - in flight {report.in_flight}")
    for step, child in individuals.items():
        if step >= population and step not in killing_steps:
            v.append(f"individual {step}: its step killed nobody")
    for step in claims:
        if step >= total_steps:
            v.append(f"claim {step}: beyond the run's {total_steps} steps")
    _check_marks(store, individuals, deaths, unreadable, v)
    _check_results(store, report)
    return report


def _check_results(store: Store, report: CheckReport) -> None:
    """What was measured after the search (``results/``: the best's test, final models, LeNet-5, ``evolve
    finalize``'s stages): each record parses, and every weight file a finalize record names is there."""
    v = report.violations
    for key in store.list_keys("results/"):
        if not key.endswith(".json"):
            continue
        try:
            record = store.read_json(key) or {}
            model = model_for(key)
            if model is not None:
                parse(model, record)
        except CorruptRecord as exc:
            v.append(f"{key}: does not parse ({exc.reason})")
            report.damaged.append(key)
            continue
        except RecordError as exc:
            v.append(f"{key}: malformed ({exc})")
            report.damaged.append(key)
            continue
        if not key.startswith(FINALIZE_PREFIX):
            continue
        for info in record.get("weights") or []:
            name = info.get("key") if isinstance(info, dict) else info
            try:
                there = isinstance(name, str) and store.exists(name)
            except ValueError:  # not a key this store accepts
                there = False
            if not there:
                v.append(f"{key}: its weights {name!r} are missing")


def _check_marks(store: Store, individuals: dict[int, Individual], deaths: dict[int, Tombstone],
                 unreadable: set[int], v: list[str]) -> None:
    """A mark that lies would steer selection; a missing one is only a stale view (resume writes it)."""
    for key in store.list_keys("log/"):
        mark = parse_mark(key)
        if mark is None:
            v.append(f"{key}: not a log mark")
        elif mark.step in unreadable:
            continue  # its record's damage is reported once, above
        elif mark.done:
            child = individuals.get(mark.step)
            if child is None:
                v.append(f"{key}: step {mark.step} has no child")
            elif child.loser != mark.loser or not _same(child.fitness, mark.fitness):
                v.append(f"{key}: says loser {mark.loser!r}, fitness {mark.fitness!r}; the child records "
                         f"{child.loser!r}, {child.fitness!r}")
        elif mark.loser is not None and getattr(deaths.get(mark.loser), "killed_at_step", None) != mark.step:
            v.append(f"{key}: no tombstone of {mark.loser} names step {mark.step}")


def _same(a: Any, b: float | None) -> bool:
    return isinstance(a, (int, float)) and b is not None and (float(a) == b or (a != a and b != b))
