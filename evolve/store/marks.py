"""The log: what selection needs from each step, in the keys of empty objects.

A worker samples from the live set and compares fitness; it needs no genome but its parent's.
So every change that selection needs is also written as a *mark*, an object whose key carries
it, in step order, in folders of ``LOG_BLOCK`` steps::

    log/<block>/<s>.c                             step s is claimed (after its claim)
    log/<block>/<s>.k<attempt>.<loser>.<parent>   step s killed <loser> (after its tombstone)
    log/<block>/<s>.d.<loser or n>.<fitness>      step s's child exists (after its record)

and a worker's refresh is one listing of the marks after what it has seen: on S3 one request
per 1,000 marks (``StartAfter``), on local disks and NFS the one or two block folders in use.
Marks are derived from the create-once records and written without fsync: a mark lost in a
crash is written again by whoever finishes or adopts the step, and ``backfill_log`` (run on
resume) writes those a store lacks, stores made before the log included. A view that misses
a mark is only stale, which every create-once check already tolerates; ``evolve check``
reports a mark that disagrees with its record.
"""

from __future__ import annotations

from typing import Any

from evolve.store.backend import Store
from evolve.store.keys import (
    claim_key,
    death_key,
    done_mark,
    individual_key,
    kill_mark,
    parse_mark,
    selection_key,
    step_of,
)


def read_selection(store: Store, step: int, attempt: int) -> dict[str, Any] | None:
    """Attempt ``attempt``'s (parent, loser) for ``step``, or None if nobody has chosen it yet.

    A claim made when enough individuals were live carries attempt 0 (one durable record
    fewer per step); one made without (a step that had to wait) leaves it to ``selections/``.
    """
    if attempt == 0:
        claim = store.read_json(claim_key(step))
        if claim is not None and isinstance(claim.get("selection"), dict):
            return claim["selection"]
    return store.read_json(selection_key(step, attempt))


def selections_of(store: Store, step: int) -> list[dict[str, Any]]:
    """Every attempt's selection for ``step`` so far, in order."""
    out: list[dict[str, Any]] = []
    while (selection := read_selection(store, step, len(out))) is not None:
        out.append(selection)
    return out


def backfill_log(store: Store) -> int:
    """Write the log marks a store lacks (one written before the log existed, or marks a crash lost).

    Run when a run resumes: a view that misses a child's mark would take its step for one in
    flight and wait a lease to find the child there. Lists the store once and reads only the
    records whose marks are missing; returns how many marks it wrote.
    """
    marks = [m for m in map(parse_mark, store.list_keys("log/")) if m is not None]
    done = {m.step for m in marks if m.done}
    killed = {(m.step, m.loser) for m in marks if not m.done}
    written = 0
    children = {step_of(k) for k in store.list_keys("individuals/")}
    for step in sorted(children - done):
        record = store.read_json(individual_key(step))
        if record is not None:
            loser = record.get("loser")
            store.put_json(done_mark(step, loser if isinstance(loser, int) else None, float(record["fitness"])), {})
            written += 1
    claimed = {step_of(k) for k in store.list_keys("claims/")}
    for step in sorted(claimed - children):  # kills of steps in flight: their losers must not be sampled
        for attempt, selection in enumerate(selections_of(store, step)):
            loser, parent = selection.get("loser"), selection.get("parent")
            if not isinstance(loser, int) or (step, loser) in killed:
                continue
            death = store.read_json(death_key(loser))
            if death and (death.get("killed_at_step"), death.get("attempt")) == (step, attempt):
                store.put_json(kill_mark(step, attempt, loser, parent if isinstance(parent, int) else None), {})
                written += 1
    return written
