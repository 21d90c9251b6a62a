"""A soft record kept fresh by a thread while something runs: the "still alive" of a claim or a driver.

Readers judge it by whether it changes (on their own clock) or by its time; what a beat says beyond
that is the caller's ``record()``. Steps beat through ``evolve.engine.heartbeat`` instead: one thread
for every step a worker holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from evolve.store.backend import Store


class Beating:
    """``store.put_json(key, record())`` now and every ``interval`` seconds until ``stop(last)``: then
    ``last`` is written (or, with None, the key deleted). Failures are skipped: a missed beat only risks
    that a reader takes the beater for gone."""

    def __init__(self, store: Store, key: str, interval: float, record: Callable[[], dict[str, Any]]) -> None:
        self.store, self.key, self.interval, self.record = store, key, max(0.05, interval), record
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"evolve-beat-{key}", daemon=True)

    def start(self) -> Beating:
        self._put(self.record())
        self._thread.start()
        return self

    def stop(self, last: dict[str, Any] | None = None) -> None:
        if self._done.is_set():
            return
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            if last is None:
                self.store.delete(self.key)
            else:
                self.store.put_json(self.key, last)
        except Exception:  # noqa: BLE001 - as a missed beat
            pass

    def _put(self, record: dict[str, Any]) -> None:
        try:
            self.store.put_json(self.key, record)
        except Exception:  # noqa: BLE001 - a missed beat
            pass

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self._put(self.record())
