"""Damaged records: refused, or moved aside (`evolve check --repair`), never skipped silently.

A record appears whole or not at all, so one that does not parse was damaged from outside (a
disk, a hand, a sync tool). Views skip it with a warning; a run refuses to go on over it: the step
would count as done while nothing could read its child, and the stages after the search would
never run. ``repair`` moves each damaged record aside, under ``damaged/<its key>`` (never
deleting), and puts the store back in a state the engine already knows how to finish:

    individuals/<s>       moved, with step s's done mark and what was measured of it (results/tested,
                          results/final): step s is in flight again, given up (heartbeats/<s>.released),
                          so `evolve resume` adopts it at once and replays it: the same genome from the
                          same seeds, trained from its parent's weights where they are still kept (live,
                          among the best keep_best, or keep = "all"), else from scratch
    deaths/<d>            moved, and written again from what names d's killer: the child of the step
                          that killed it (its loser, attempt and parent), else that step's kill mark
    claims/<s>            moved, when step s has its child (nobody reads the claim again); a claim of a
                          step in flight carries its selection, so it is refused, not guessed
    results/...           moved: the best's test, the final model, LeNet-5 or a finalize stage is
                          computed again when next asked for

Anything else damaged (run.json, an extension) is reported and left where it is.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from evolve.store.backend import CorruptRecord, Store
from evolve.store.keys import (
    LENET_KEY,
    PAD,
    STAGE_CLAIMS_PREFIX,
    log_folder,
    parse_mark,
    record_key_of_final,
    record_key_of_tested,
    release_key,
    step_of,
)
from evolve.store.records import RecordError, model_for, parse

DAMAGED_PREFIX = "damaged/"


@dataclass
class RepairReport:
    moved: list[tuple[str, str]] = field(default_factory=list)  # (key, where it went)
    rewritten: list[str] = field(default_factory=list)  # records written again from what names them
    rerun: list[int] = field(default_factory=list)  # steps in flight again
    left: list[tuple[str, str]] = field(default_factory=list)  # (key, why it could not be repaired)

    def lines(self) -> list[str]:
        out = [f"moved {key} to {to}" for key, to in self.moved]
        out += [f"wrote {key} again from the records that name it" for key in self.rewritten]
        if self.rerun:
            steps = ", ".join(map(str, self.rerun))
            out.append(f"step{'s' if len(self.rerun) > 1 else ''} {steps} will run again: `evolve resume` adopts "
                       f"{'them' if len(self.rerun) > 1 else 'it'} at once")
        out += [f"not repaired: {key}: {why}" for key, why in self.left]
        return out


def refusal(url: str, unreadable: list[tuple[str, str]]) -> str:
    """The one line a run that will not go on over damaged records says."""
    key, reason = unreadable[0]
    more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
    return (f"{url}: record {key} is unreadable ({reason}){more}; `evolve check --repair {url}` moves damaged "
            "records aside (into damaged/) so that their steps run again")


def damage_of(store: Store, key: str) -> str | None:
    """Why the record at ``key`` cannot be used (does not parse, or lacks a field every reader needs); None if
    it can (or is not there)."""
    try:
        data = store.read_json(key)
    except CorruptRecord as exc:
        return f"does not parse ({exc.reason})"
    model = model_for(key)
    if data is None or model is None:
        return None
    try:
        parse(model, data)
    except RecordError as exc:
        return f"malformed ({exc})"
    return None


def repair(store: Store, damaged: list[str], dry_run: bool = False) -> RepairReport:
    """Move the records at ``damaged`` (as ``evolve check`` found them) aside, as the module says."""
    report = RepairReport()
    children = {step_of(k) for k in store.list_keys("individuals/")} - {step_of(k) for k in damaged
                                                                        if k.startswith("individuals/")}
    for key in sorted(damaged, key=_order):
        if damage_of(store, key) is None:
            continue  # repaired meanwhile, or gone
        if key.startswith("individuals/"):
            step = step_of(key)
            moves = [key, *_done_marks(store, step), record_key_of_tested(step), record_key_of_final(step),
                     *_stage_claims(store, f"tested-{step}"), *_stage_claims(store, f"final-{step}")]
            for k in moves:
                if store.exists(k) and not dry_run:
                    report.moved.append((k, _move_aside(store, k)))
                elif store.exists(k):
                    report.moved.append((k, DAMAGED_PREFIX + k))
            if not dry_run:
                _give_up(store, step)
            report.rerun.append(step)
        elif key.startswith("deaths/"):
            record = _tombstone_from_killer(store, step_of(key))
            report.moved.append((key, DAMAGED_PREFIX + key if dry_run else _move_aside(store, key)))
            if record is None:
                report.left.append((key, "no child or kill mark names its killer: it counts as alive until it "
                                         "is killed again"))
            else:
                if not dry_run:
                    store.create_json(key, record)
                report.rewritten.append(key)
        elif key.startswith("claims/"):
            if step_of(key) in children:
                report.moved.append((key, DAMAGED_PREFIX + key if dry_run else _move_aside(store, key)))
            else:
                report.left.append((key, "its step is in flight and its claim holds the step's selection; restore "
                                         "it from a backup, or start the run again"))
        elif key.startswith("results/"):
            for k in [key, *_stage_claims(store, _stage_of(key))]:  # claimed: the next look computes it again at once
                report.moved.append((k, DAMAGED_PREFIX + k if dry_run else _move_aside(store, k)))
        else:
            report.left.append((key, "the run cannot be rebuilt without it; restore it from a backup"))
    report.rerun.sort()
    return report


def _order(key: str) -> tuple[int, str]:
    """Individuals first: a tombstone is rebuilt from the children left readable."""
    return (0 if key.startswith("individuals/") else 1, key)


def _move_aside(store: Store, key: str) -> str:
    """Copy ``key`` under ``damaged/`` (a fresh name if that one is taken), then delete it; where it went."""
    data = store.read_bytes(key) or b""
    target, n = DAMAGED_PREFIX + key, 1
    while not store.create(target, data):
        if store.read_bytes(target) == data:
            break
        target, n = f"{DAMAGED_PREFIX}{key}.{n}", n + 1
    store.delete(key)
    return target


def _stage_of(key: str) -> str | None:
    """The stage name ``evolve.final.once`` claims a ``results/`` record under (None: not claimed there)."""
    if key == LENET_KEY:
        return "lenet5"
    for kind in ("tested", "final"):
        if key.startswith(f"results/{kind}/") and key.endswith(".json"):
            return f"{kind}-{step_of(key)}"
    return None


def _stage_claims(store: Store, stage: str | None) -> list[str]:
    """The claims (and beats) of ``stage``: moved with its record, so that nobody waits for a holder long gone."""
    if stage is None:
        return []
    return [k for k in store.list_keys(f"{STAGE_CLAIMS_PREFIX}{stage}")
            if k.removeprefix(STAGE_CLAIMS_PREFIX)[len(stage)] in ".-"]


def _done_marks(store: Store, step: int) -> list[str]:
    return [k for k in store.list_keys(log_folder(step))
            if (m := parse_mark(k)) is not None and m.step == step and m.done]


def _give_up(store: Store, step: int) -> None:
    """Step ``step``'s holders are long gone: its last one gives it up, so a resume adopts it at once."""
    adoptions = store.list_keys(f"adoptions/{step:0{PAD}d}-")
    store.put_json(release_key(step, len(adoptions) - 1),
                   {"step": step, "adoption": len(adoptions) - 1, "worker": "evolve check --repair",
                    "reason": "its child's record was moved aside", "created_at": time.time()})


_KILL = re.compile(r"\.k(\d+)\.")


def _tombstone_from_killer(store: Store, dead: int) -> dict[str, Any] | None:
    """Individual ``dead``'s tombstone as its killer wrote it: from the child that names it as its loser,
    else from the kill mark of the step in flight that killed it."""
    for key in store.list_keys("individuals/"):
        try:
            child = store.read_json(key) or {}
        except CorruptRecord:
            continue
        if child.get("loser") == dead:
            parents = child.get("parents") or []
            return {"step": dead, "killed_at_step": child["step"], "attempt": child.get("attempt"),
                    "parent": parents[0] if parents else None, "by": "evolve check --repair",
                    "created_at": time.time()}
    for key in store.list_keys("log/"):
        mark = parse_mark(key)
        if mark is not None and not mark.done and mark.loser == dead and (match := _KILL.search(key)):
            return {"step": dead, "killed_at_step": mark.step, "attempt": int(match.group(1)), "parent": mark.parent,
                    "by": "evolve check --repair", "created_at": time.time()}
    return None


__all__ = ["DAMAGED_PREFIX", "RepairReport", "damage_of", "refusal", "repair"]
