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

import struct
from dataclasses import dataclass
from typing import Any

from evolve.store import PAD, Store, claim_key, death_key, individual_key, step_of

LOG_BLOCK = 500  # steps per log folder: a local listing reads one or two folders of at most 1,500 names


def log_folder(step: int) -> str:
    return f"log/{step // LOG_BLOCK:09d}/"


def claim_mark(step: int) -> str:
    return f"{log_folder(step)}{step:0{PAD}d}.c"


def kill_mark(step: int, attempt: int, loser: int, parent: int | None = None) -> str:
    tail = "" if parent is None else f".{parent:0{PAD}d}"
    return f"{log_folder(step)}{step:0{PAD}d}.k{attempt:03d}.{loser:0{PAD}d}{tail}"


def done_mark(step: int, loser: int | None, fitness: float) -> str:
    who = "n" if loser is None else f"{loser:0{PAD}d}"
    return f"{log_folder(step)}{step:0{PAD}d}.d.{who}.{struct.pack('>d', float(fitness)).hex()}"


@dataclass(frozen=True)
class Mark:
    step: int
    done: bool  # a child (else a claim, or a kill when it names a loser)
    loser: int | None
    fitness: float | None = None
    parent: int | None = None  # a kill's: whose weights the step inherits


def parse_mark(key: str) -> Mark | None:
    """The mark a ``log/`` key carries; None for anything else."""
    parts = key.rsplit("/", 1)[-1].split(".")
    try:
        if len(parts) == 2 and parts[1] == "c":
            return Mark(int(parts[0]), False, None)
        if len(parts) in (3, 4) and parts[1].startswith("k"):
            return Mark(int(parts[0]), False, int(parts[2]), parent=int(parts[3]) if len(parts) == 4 else None)
        if len(parts) == 4 and parts[1] == "d":
            loser = None if parts[2] == "n" else int(parts[2])
            return Mark(int(parts[0]), True, loser, struct.unpack(">d", bytes.fromhex(parts[3]))[0])
    except (ValueError, struct.error):
        return None
    return None


def selection_key(step: int, attempt: int) -> str:
    return f"selections/{step:0{PAD}d}-{attempt:03d}.json"


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
