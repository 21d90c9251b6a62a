"""The population as workers see it: a cached view of the store plus the step protocol.

Every action that changes the population is a create-once record, so any number of
actors (the claimant, a zombie that woke up late, adopters) can replay a step and
converge on the same outcome:

    claims/<s>              who started step s
    selections/<s>-<k>      attempt k's (parent, loser); the first whose tombstone
                            names step s and attempt k is the step's selection
    deaths/<loser>          the tombstone: killed at step s, attempt k
    weights/<s>-<nonce>     the trained child's weights (one per trainer; losers are garbage)
    individuals/<s>         the child; whoever creates it first finished the step
    generations/<g>         generational mode: generation g's genomes, built once by
                            whoever first finds generation g-1 complete
    adoptions/<s>-<j>       j-th takeover of a step whose heartbeat went quiet
    heartbeats/<s>          soft, overwritten: the holder's progress counter

Leases are judged on the observer's own monotonic clock: a step is lapsed when its
heartbeat has not changed for ``lease_seconds`` of the observer's time, so no two
hosts' clocks are ever compared.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from evolve.selection import Choice, Member
from evolve.store import PAD, Store, claim_key, death_key, individual_key, step_of

def _key(prefix: str, step: int, suffix: str = "") -> str:
    return f"{prefix}/{step:0{PAD}d}{suffix}.json"


def selection_key(step: int, attempt: int) -> str:
    return _key("selections", step, f"-{attempt:03d}")


def adoption_key(step: int, index: int) -> str:
    return _key("adoptions", step, f"-{index:03d}")


def heartbeat_key(step: int) -> str:
    return _key("heartbeats", step)


def generation_key(generation: int) -> str:
    return _key("generations", generation)


@dataclass
class View:
    """What one worker currently believes; refreshed by listing, never trusted for correctness."""

    individuals: dict[int, dict[str, Any]] = field(default_factory=dict)
    deaths: dict[int, dict[str, Any]] = field(default_factory=dict)
    claims: set[int] = field(default_factory=set)
    refreshed_at: float = float("-inf")


class Population:
    """A worker's window on the shared population (one instance per worker)."""

    def __init__(self, store: Store, size: int, total_steps: int, worker: str, lease_seconds: float,
                 refresh_seconds: float, generational: bool = False) -> None:
        self.store = store
        self.generational = generational
        self.size = size
        self.total_steps = total_steps
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.refresh_seconds = refresh_seconds
        self.view = View()
        self._beats: dict[int, tuple[Any, float]] = {}
        self._next_claim = 0

    # -- the view ---------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> View:
        view = self.view
        if not force and time.monotonic() - view.refreshed_at < self.refresh_seconds:
            return view
        for key in self.store.list_keys("individuals/"):
            step = step_of(key)
            if step not in view.individuals:
                record = self.store.read_json(key)
                if record is not None:
                    view.individuals[step] = record
        for key in self.store.list_keys("deaths/"):
            step = step_of(key)
            if step not in view.deaths:
                record = self.store.read_json(key)
                if record is not None:
                    view.deaths[step] = record
        view.claims = {step_of(k) for k in self.store.list_keys("claims/")}
        view.refreshed_at = time.monotonic()
        return view

    def live(self) -> list[Member]:
        view = self.view
        return [Member(step, float(view.individuals[step]["fitness"]))
                for step in sorted(view.individuals) if step not in view.deaths]

    def finished(self) -> bool:
        return all(s in self.view.individuals for s in range(self.total_steps))

    def ready(self, step: int) -> bool:
        """May ``step`` start? Children wait for the initial population (generational: the previous generation)."""
        if step < self.size:
            return True
        first = (step // self.size - 1) * self.size if self.generational else 0
        return all(s in self.view.individuals for s in range(first, first + self.size))

    def individual(self, step: int) -> dict[str, Any]:
        record = self.view.individuals.get(step) or self.store.read_json(individual_key(step))
        if record is None:
            raise LookupError(f"individual {step} is missing from the store")
        self.view.individuals[step] = record
        return record

    # -- owning a step ----------------------------------------------------------------------

    def claim_next(self) -> int | None:
        """Own a fresh step (create-once on its claim), or None when none may start now."""
        view = self.view
        step = max(self._next_claim, max(view.claims, default=-1) + 1)
        while step < self.total_steps:
            if not self.ready(step):
                return None
            if self.store.create_json(claim_key(step), {"step": step, "worker": self.worker,
                                                        "created_at": time.time()}):
                view.claims.add(step)
                self._next_claim = step + 1
                return step
            view.claims.add(step)
            step += 1
        self._next_claim = step
        return None

    def lapsed(self) -> list[int]:
        """Claimed steps with no child whose heartbeat has been quiet for a lease on our clock."""
        now = time.monotonic()
        out = []
        pending = sorted(s for s in self.view.claims if s not in self.view.individuals and s < self.total_steps)
        for step in pending:
            beat = self.store.read_json(heartbeat_key(step))
            value = None if beat is None else (beat.get("holder"), beat.get("seq"))
            seen = self._beats.get(step)
            if seen is None or seen[0] != value:
                self._beats[step] = (value, now)
            elif now - seen[1] > self.lease_seconds:
                out.append(step)
        for step in list(self._beats):
            if step in self.view.individuals:
                del self._beats[step]
        return out

    def adopt(self, step: int) -> bool:
        """Take over a lapsed step; exactly one adopter wins each round."""
        index = len(self.store.list_keys(f"adoptions/{step:0{PAD}d}-"))
        won = self.store.create_json(adoption_key(step, index), {"step": step, "worker": self.worker,
                                                                  "created_at": time.time()})
        if won:
            self._beats.pop(step, None)
        return won

    def heartbeat(self, step: int, holder: str, seq: int) -> None:
        self.store.put_json(heartbeat_key(step), {"step": step, "holder": holder, "seq": seq,
                                                  "worker": self.worker})

    # -- selection and death, exactly once per step -----------------------------------------

    def settle_selection(self, step: int, choose) -> tuple[Choice, int]:
        """The step's (parent, loser) and attempt number, killing the loser exactly once.

        ``choose(live, attempt)`` proposes a pair when attempt k has no record yet.
        Replaying a step reads the records already written and continues where they stop.
        """
        attempt = 0
        while True:
            record = self.store.read_json(selection_key(step, attempt))
            if record is None:
                self.refresh(force=attempt > 0)
                choice = choose(self.live(), attempt)
                if choice is None:
                    time.sleep(min(0.05 * (attempt + 1), 1.0))
                    self.refresh(force=True)
                    continue
                mine = {"step": step, "attempt": attempt, "parent": choice.parent, "loser": choice.loser,
                        "worker": self.worker}
                if not self.store.create_json(selection_key(step, attempt), mine):
                    continue
                record = mine
            choice = Choice(parent=int(record["parent"]), loser=int(record["loser"]))
            if self.kill(choice.loser, step, attempt, choice.parent):
                return choice, attempt
            attempt += 1

    def kill(self, loser: int, step: int, attempt: int, parent: int | None) -> bool:
        """Write the loser's tombstone for (step, attempt); True if the tombstone names them."""
        tombstone = {"step": loser, "killed_at_step": step, "attempt": attempt, "parent": parent,
                     "by": self.worker, "created_at": time.time()}
        self.store.create_json(death_key(loser), tombstone)
        death = self.store.read_json(death_key(loser))
        if death is None:
            return False
        self.view.deaths[loser] = death
        return death.get("killed_at_step") == step and death.get("attempt") == attempt

    def settle_generation(self, generation: int, build) -> dict[str, Any]:
        """Generation ``generation``'s record, built by ``build()`` if nobody has written it yet."""
        record = self.store.read_json(generation_key(generation))
        if record is None:
            self.store.create_json(generation_key(generation), build())
            record = self.store.read_json(generation_key(generation))
        return record
