"""A stage after the search, done once whatever the number of drivers: claimed create-once, then computed.

The best's test, its final training and the LeNet-5 reference are each one create-once record
(``evolve.final.final_model``); two drivers on one store would compute each twice and keep one.
So each is claimed first, as steps are::

    results/claims/<stage>[-<j>].json         who computes the stage (its j-th takeover)
    results/claims/<stage>[-<j>].beat.json    soft: its holder is alive

    record there?             -> it, at once
    create claim j            -> ours: beat while computing it, then write the record
    someone else's claim j    -> wait for the record; if the claimant's beat stays the same for a
                                 lease on our clock (or its process is gone, on this machine),
                                 claim j + 1 and compute it ourselves

A stage's record is still create-once, so a holder wrongly presumed dead costs a second computation,
never a second record.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

from evolve.engine.liveness import machine_id, process_gone
from evolve.engine.liveness import this_process as me
from evolve.store.backend import Store
from evolve.store.beat import Beating
from evolve.store.keys import STAGE_CLAIMS_PREFIX as CLAIMS_PREFIX

POLL_SECONDS = 1.0


def claim_key(stage: str, index: int) -> str:
    return f"{CLAIMS_PREFIX}{stage}{'' if index == 0 else f'-{index}'}.json"


def beat_key(stage: str, index: int) -> str:
    return claim_key(stage, index)[:-5] + ".beat.json"


def once(store: Store, stage: str, record_key: str, compute: Callable[[], dict[str, Any]], lease_seconds: float,
         on_wait: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The record at ``record_key``: as stored, or made by ``compute()`` (which writes it create-once and
    returns it) under a claim of ``stage``, or waited for while another process holds that claim.
    ``on_wait(holder)``: called once when another process holds the claim (its host, pid, since)."""
    index, told = 0, False
    while True:
        kept = store.read_json(record_key)
        if kept is not None:
            return kept
        won, holder = store.create_or_read_json(claim_key(stage, index), {"stage": stage, **me(),
                                                                          "created_at": time.time()})
        if won:
            seq = itertools.count()
            beat = Beating(store, beat_key(stage, index), lease_seconds / 4,
                           lambda: {"seq": next(seq), **me()}).start()
            try:
                return compute()
            finally:
                beat.stop()
        if on_wait is not None and not told:
            on_wait(holder)
            told = True
        kept = _wait(store, stage, index, record_key, holder, lease_seconds)
        if kept is not None:
            return kept
        index += 1


def _wait(store: Store, stage: str, index: int, record_key: str, holder: dict[str, Any],
          lease_seconds: float) -> dict[str, Any] | None:
    """Until the record appears (it), or the holder is gone (None): its beat unchanged for a lease on our
    clock, or its process dead on this machine."""
    seen, since = None, time.monotonic()
    while True:
        kept = store.read_json(record_key)
        if kept is not None:
            return kept
        if process_gone(holder) or holder.get("machine") == machine_id() and holder.get("pid") == os.getpid():
            return None  # its process is gone, or it is this one (an earlier try that failed)
        beat = store.read_json(beat_key(stage, index))
        if beat != seen:
            seen, since = beat, time.monotonic()
        elif time.monotonic() - since > lease_seconds:
            return None
        time.sleep(min(POLL_SECONDS, lease_seconds / 8))


def waiting_line(what: str, holder: dict[str, Any]) -> str:
    """What a process waiting for another's stage says: who computes it, since when."""
    since = time.strftime("%H:%M:%S", time.localtime(float(holder.get("created_at", time.time()))))
    return (f"{what}: computed by another driver ({holder.get('host', '?')}, pid {holder.get('pid', '?')}, since "
            f"{since}); waiting for its record")
