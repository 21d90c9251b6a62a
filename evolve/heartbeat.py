"""A step's heartbeat: while its holder works on it, a thread of its own says so every quarter lease.

Observers judge a lease on their own clocks (``evolve.population``): a step whose beat stops
changing for a lease is adopted. A fresh claim needs no beat before the first quarter lease, since
observers start their clock when they first see the claim, so a step shorter than that writes no
heartbeat at all. An adopter beats at once, or observers still timing the previous holder's last
beat would adopt again. The beat goes on until the step's child is written, so nobody adopts a step
whose child is on its way; then its record is deleted (it would only lengthen later listings).
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

log = logging.getLogger("evolve.worker")


class Heartbeat:
    def __init__(self, population: Any, store: Any, step: int, lease_seconds: float, adoption: int | None,
                 at_once: bool) -> None:
        self.population, self.store, self.step = population, store, step
        self.adoption = -1 if adoption is None else adoption
        self.interval = max(0.05, lease_seconds / 4)
        self.holder = uuid.uuid4().hex
        self.keys: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(at_once,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        for key in self.keys[:1]:
            self.store.delete(key)

    def _beat(self, at_once: bool) -> None:
        seq = 0
        if not at_once and self._done.wait(self.interval):
            return
        while True:
            try:
                key = self.population.heartbeat(self.step, self.holder, seq, self.adoption)
                if not self.keys:
                    self.keys.append(key)
            except Exception as exc:  # a missed beat only risks a wasted adoption
                log.warning("heartbeat for step %d failed: %s", self.step, exc)
            seq += 1
            if self._done.wait(self.interval):
                return
