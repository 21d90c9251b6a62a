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

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from evolve.engine.liveness import machine_id, process_alive
from evolve.store.backend import Store
from evolve.store.keys import STAGE_CLAIMS_PREFIX as CLAIMS_PREFIX

POLL_SECONDS = 1.0


def claim_key(stage: str, index: int) -> str:
    return f"{CLAIMS_PREFIX}{stage}{'' if index == 0 else f'-{index}'}.json"


def beat_key(stage: str, index: int) -> str:
    return claim_key(stage, index)[:-5] + ".beat.json"


def me() -> dict[str, Any]:
    return {"host": socket.gethostname(), "machine": machine_id(), "pid": os.getpid()}


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
            with _Beating(store, beat_key(stage, index), lease_seconds / 4):
                return compute()
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
        if holder.get("machine") == machine_id() and (int(holder.get("pid", 0)) == os.getpid()
                                                       or not process_alive(int(holder.get("pid", 0)))):
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


class _Beating:
    """While a stage is computed: its claim's beat every ``interval`` seconds (a thread of its own)."""

    def __init__(self, store: Store, key: str, interval: float) -> None:
        self.store, self.key, self.interval = store, key, max(0.05, interval)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"evolve-beat-{key}", daemon=True)

    def __enter__(self) -> _Beating:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.thread.join()
        try:
            self.store.delete(self.key)
        except Exception:  # noqa: BLE001 - a soft record left behind is only read by waiters, who see the record
            pass

    def _run(self) -> None:
        seq = 0
        while True:
            try:
                self.store.put_json(self.key, {"seq": seq, **me()})
            except Exception:  # noqa: BLE001 - a missed beat only risks a second computation
                pass
            seq += 1
            if self.done.wait(self.interval):
                return
