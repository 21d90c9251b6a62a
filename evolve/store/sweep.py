"""Garbage collection of weights nobody will read again.

Kept, by the rule the run's own collector keeps (``evolve.store.keep``): the weights of every live
individual, of the run's best ``keep_best`` ever (dead or alive), of every pinned one (``pins/``); and
of every parent named by a step still in flight (an adopter will need them), of every step not yet
finished, and of anything dead for less than ``grace_seconds`` (a worker's stale view may still pick
it as a parent).
Removed: a dead individual's weights after the grace period, the weights of losing
trainers (a zombie or a duplicate adopter) whose child was never recorded, and ``evolve finalize``
weights that no stage record will ever name (``stray_weights``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from evolve.store.backend import Store
from evolve.store.keep import best_ever
from evolve.store.keys import FINALIZE_PREFIX, finalize_key, finalize_stage_of, step_of
from evolve.store.marks import selections_of
from evolve.store.snapshot import Snapshot


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)
    kept: int = 0
    freed_bytes: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # skipped records: (key, reason)


def collect(store: Store, keep_best: int, grace_seconds: float = 600.0, dry_run: bool = False) -> GcReport:
    """Delete (or with ``dry_run`` only list) what nobody will read again; ``keep_best``: the run's."""
    snap = Snapshot.read(store)
    now = time.time()
    recorded = {r["weights"]["key"] for r in snap.individuals.values() if r.get("weights")}
    protected = {s for s in snap.individuals if s not in snap.deaths}
    protected |= best_ever(((s, r.get("fitness")) for s, r in snap.individuals.items()), keep_best)
    protected |= {s for s, d in snap.deaths.items() if now - float(d.get("created_at", now)) < grace_seconds}
    protected |= {step_of(k) for k in store.list_keys("pins/")}  # another command will read them
    for step in snap.claims - set(snap.individuals):
        protected |= {int(sel["parent"]) for sel in selections_of(store, step)}
    report = GcReport(unreadable=list(snap.unreadable))
    for key in store.list_keys("weights/"):
        step = step_of(key)
        if step not in snap.individuals:
            report.kept += 1  # in flight: its record may still come
            continue
        garbage = key not in recorded or step not in protected
        if not garbage:
            report.kept += 1
            continue
        record = snap.individuals[step].get("weights") or {}
        report.freed_bytes += int(record.get("bytes", 0)) if record.get("key") == key else 0
        if not dry_run:
            store.delete(key)
        report.removed.append(key)
    for key in stray_weights(store):
        if not dry_run:
            store.delete(key)
        report.removed.append(key)
    return report


def stray_weights(store: Store) -> list[str]:
    """Finalize weights that no record will ever name: those of a stage whose record names others (a
    racing finalize's, or those of a stage killed before its record and since redone). A stage not yet
    recorded keeps all its weights: it may be training still."""
    by_stage: dict[str, list[str]] = {}
    for key in store.list_keys(FINALIZE_PREFIX):
        if key.endswith(".safetensors"):
            by_stage.setdefault(finalize_stage_of(key), []).append(key)
    out = []
    for stage, keys in sorted(by_stage.items()):
        record = store.read_json(finalize_key(stage))
        if record is not None:
            out += [k for k in keys if k not in {w["key"] for w in record.get("weights") or []}]
    return out
