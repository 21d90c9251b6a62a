"""A step's heartbeat: while its holder works on it, the holder says so every quarter lease.

Observers judge a lease on their own clocks (``evolve.engine.population``): a step whose beat stops
changing for a lease is adopted. A fresh claim needs no beat before the first quarter lease, since
observers start their clock when they first see the claim, so a step shorter than that writes no
heartbeat at all. An adopter beats at once, or observers still timing the previous holder's last
beat would adopt again. The beat goes on until the step's child is written, so nobody adopts a step
whose child is on its way; then its record is deleted (it would only lengthen later listings).

One thread per worker beats for all the steps it holds (the step training and the one whose child is
being written), started with the first step it holds and gone after a quiet while. A thread per step
cost a thread start on every step's path, and a start waits for the new thread to take the GIL from
the writer thread.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("evolve.engine.worker")

IDLE_SECONDS = 5.0  # a beating thread with no step to beat for ends after this long


@dataclass(eq=False)
class Beat:
    """One held step's heartbeat; :meth:`stop` once its child is written (or the step is given up)."""

    owner: Heartbeats
    step: int
    adoption: int
    due: float  # time.monotonic() of the next beat
    holder: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    key: str | None = None  # the record its beats write
    beating: bool = False  # a beat is being written now
    stopped: bool = False

    def stop(self) -> None:
        self.owner.stop(self)


class Heartbeats:
    """The beats of one worker's held steps, written by one thread of its own."""

    def __init__(self, population: Any, store: Any, lease_seconds: float, name: str = "evolve-heartbeats") -> None:
        self.population, self.store, self.name = population, store, name
        self.interval = max(0.05, lease_seconds / 4)
        self._cond = threading.Condition()
        self._beats: list[Beat] = []
        self._thread: threading.Thread | None = None

    def start(self, step: int, adoption: int | None, at_once: bool) -> Beat:
        """Beat for ``step`` (held under ``adoption``; None: we claimed it), now if ``at_once``, else
        from a quarter lease on."""
        beat = Beat(self, step, -1 if adoption is None else adoption,
                    time.monotonic() + (0.0 if at_once else self.interval))
        with self._cond:
            self._beats.append(beat)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._cond.notify()
        return beat

    def stop(self, beat: Beat) -> None:
        """No beat for ``beat``'s step after this returns (one being written is waited for); its record
        is deleted."""
        with self._cond:
            beat.stopped = True
            while beat.beating:
                self._cond.wait()
            if beat in self._beats:
                self._beats.remove(beat)
        if beat.key is not None:
            self.store.delete(beat.key)

    def release_all(self, reason: str) -> list[int]:
        """Stop beating for every step held and give each up (``Claims.release``): observers adopt them
        without waiting out a lease. For a worker that will not finish its steps (its process is going
        away); the steps given up."""
        with self._cond:
            held = [b for b in self._beats if not b.stopped]
        for beat in held:
            self.stop(beat)
            self.population.release(beat.step, beat.adoption, reason)
        return [b.step for b in held]

    def _run(self) -> None:
        while (beat := self._next()) is not None:
            try:
                beat.key = self.population.heartbeat(beat.step, beat.holder, beat.seq, beat.adoption)
            except Exception as exc:  # a missed beat only risks a wasted adoption
                log.warning("heartbeat for step %d failed: %s", beat.step, exc)
            with self._cond:
                beat.seq += 1
                beat.due = time.monotonic() + self.interval
                beat.beating = False
                self._cond.notify_all()

    def _next(self) -> Beat | None:
        """The next beat due, once it is (marked as being written); None once idle for IDLE_SECONDS."""
        with self._cond:
            idle_since = None
            while True:
                now = time.monotonic()
                waiting = [b for b in self._beats if not b.stopped]
                if waiting:
                    idle_since = None
                    beat = min(waiting, key=lambda b: b.due)
                    if beat.due <= now:
                        beat.beating = True
                        return beat
                    self._cond.wait(beat.due - now)
                    continue
                idle_since = now if idle_since is None else idle_since
                if now - idle_since >= IDLE_SECONDS:
                    self._thread = None  # under the lock: the next start() makes a new thread
                    return None
                self._cond.wait(IDLE_SECONDS - (now - idle_since))
