"""The drivers of a run: each announces itself in the store, so a second one on the same store is noticed.

::

    drivers/<id>.json          create-once: host, pid, start time of one `evolve run` / `resume` (or API run)
    drivers/<id>.beat.json     soft: it is still running (every few seconds), or ``ended``

A second driver on a store that another is running joins it as extra workers: the store is
create-once, so two drivers share the steps without doing any twice (steps are claimed), and the
stages after the search are claimed too (``evolve.final.once``), so each runs once. Its workers
claim at random rather than in lanes, which the first driver's workers hold. Refusing would be the
safe choice only where sharing is not: there is no such case, so it joins, and says so in one line.

Whether the other driver is still running: on this machine, whether its process lives; elsewhere,
whether its beat is recent by this machine's clock (a notice only: nothing depends on it).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from evolve.engine.liveness import machine_id, process_gone, this_process
from evolve.store.backend import CorruptRecord, Store
from evolve.store.beat import Beating

PREFIX = "drivers/"
BEAT_SECONDS = 5.0


@dataclass(frozen=True)
class Driver:
    id: str
    host: str
    pid: int
    since: float

    def line(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"host {self.host}, pid {self.pid}, since {started}"


class Announcement:
    """This driver in the store while it runs: its record, then a beat every ``BEAT_SECONDS`` till ``close``."""

    def __init__(self, store: Store, command: str = "run") -> None:
        self.store = store
        self.id = f"{int(time.time() * 1000):013d}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.record = {"id": self.id, **this_process(), "since": time.time(), "command": command}
        self._beat = Beating(store, f"{PREFIX}{self.id}.beat.json", BEAT_SECONDS, lambda: {"at": time.time()})

    def open(self) -> list[Driver]:
        """Announce this driver; the others that are running the store now."""
        self.store.create_json(f"{PREFIX}{self.id}.json", self.record)
        self._beat.start()
        return others(self.store, self.id)

    def close(self) -> None:
        self._beat.stop({"at": time.time(), "ended": True})


def others(store: Store, mine: str | None = None) -> list[Driver]:
    """The drivers other than ``mine`` that are running the store now, oldest first."""
    out = []
    for key in store.list_keys(PREFIX):
        if not key.endswith(".json") or key.endswith(".beat.json") or key == f"{PREFIX}{mine}.json":
            continue
        try:
            record = store.read_json(key) or {}
            beat = store.read_json(key[:-5] + ".beat.json") or {}
        except CorruptRecord:
            continue
        if _running(record, beat):
            out.append(Driver(str(record.get("id")), str(record.get("host")), int(record.get("pid", 0)),
                              float(record.get("since", 0.0))))
    return sorted(out, key=lambda d: d.since)


def _running(record: dict[str, Any], beat: dict[str, Any]) -> bool:
    if not beat or beat.get("ended"):
        return False
    if record.get("machine") == machine_id():
        return not process_gone(record)
    return time.time() - float(beat.get("at", 0.0)) < 3 * BEAT_SECONDS
