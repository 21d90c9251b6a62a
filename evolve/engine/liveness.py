"""Who a worker is, and when one worker may know that another is dead.

A lapsed lease only suggests that a step's holder died: a slow or partitioned holder may still
be training it. Sometimes death is certain, and waiting out the lease is wasted time:

* Ray restarts an actor only once it has declared the previous incarnation dead, and the new
  one keeps the actor's id: a holder with our actor id and another worker id is a dead
  predecessor, whichever node either ran on;
* a user who resumes a killed local run starts workers in the same *slots* (``local-0``) on the
  same machine: a holder in our slot, on our machine (same host, boot and process-id namespace),
  whose process no longer exists is dead.

Everything else waits for the lease. A wrong "alive" (a reused pid) only costs a wait; a wrong
"dead" would cost a duplicate training, never a wrong record (the child is still created once).
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def machine_id() -> str:
    """Host name, boot and pid namespace, hashed: two processes with equal ids can see each other's pids."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path) as f:
                parts.append(f.read().strip())
        except OSError:
            pass
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def this_process() -> dict[str, Any]:
    """What a record says of the process that wrote it, for another to tell whether it still runs."""
    return {"host": socket.gethostname(), "machine": machine_id(), "pid": os.getpid()}


def process_gone(record: dict[str, Any]) -> bool:
    """Was ``record`` (with ``this_process``'s fields) written by a process of this machine that no longer
    runs? False when it ran elsewhere: only its beat can tell then."""
    pid = record.get("pid")
    if record.get("machine") != machine_id() or isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    return not process_alive(pid)


def process_alive(pid: int) -> bool:
    """Does process ``pid`` exist on this machine (a zombie counts as dead)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class Identity:
    """A worker: its id (in every record it writes), its slot, machine and process."""

    worker: str
    slot: str | None = None
    machine: str = ""
    pid: int = 0
    actor: str | None = None  # the Ray actor id, kept across restarts

    @classmethod
    def here(cls, worker: str, slot: str | None = None, actor: str | None = None) -> Identity:
        return cls(worker=worker, slot=slot, machine=machine_id(), pid=os.getpid(), actor=actor)

    def fields(self) -> dict[str, Any]:
        """What a claim, adoption or heartbeat record says about its writer."""
        out: dict[str, Any] = {"worker": self.worker}
        if self.slot is not None:
            out.update(slot=self.slot, machine=self.machine, pid=self.pid)
        if self.actor is not None:
            out["actor"] = self.actor
        return out

    def predecessor_dead(self, record: dict[str, Any] | None) -> bool:
        """Was ``record`` written by an earlier, now dead, incarnation of this worker?"""
        if record is None or self.slot is None or record.get("slot") != self.slot:
            return False
        if record.get("worker") == self.worker:
            return False
        if self.actor is not None and record.get("actor") == self.actor:
            return True
        if record.get("machine") != self.machine:
            return False
        pid = record.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0 or pid == self.pid:
            return False
        return not process_alive(pid)
