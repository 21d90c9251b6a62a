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
    adoptions/<s>-<j>       j-th takeover of a step whose holder went quiet or died
    heartbeats/<s>          soft, overwritten: the holder's progress counter and adoption

Leases are judged on the observer's own monotonic clock: a step is lapsed when its
heartbeat has not changed for ``lease_seconds`` of the observer's time, so no two
hosts' clocks are ever compared. At most one adoption of a step is live at a time:
adoption j+1 is created only by an observer that saw adoption j's own heartbeat (or, for
j = 0, the claimant's silence) go quiet for a lease, or that knows adoption j's holder is
dead (a restarted incarnation of the same worker slot, :mod:`evolve.identity`). An
observer that finds more adoptions than the beat it timed names starts its clock again.

A refresh reads only what is new, so it costs the same with 100 or 10,000 individuals:

* claims are contiguous (a step is claimed only after the one before it exists);
* every step below the view's *watermark* has its child in the view;
* deaths are learnt from the records that cause them (a child's ``loser``, the
  selections of steps in flight, the tombstones we read when we kill) instead of
  by listing deaths/, whose keys (the loser's step) are in no useful order.

On object stores one listing per folder starts after what the view holds (S3
``StartAfter``); on local disks and NFS, where a listing reads the whole folder,
the few keys that can be new (steps in flight, the next claims) are probed instead.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from evolve.identity import Identity
from evolve.selection import Choice, Member
from evolve.store import PAD, Store, claim_key, death_key, individual_key, step_of

PARALLEL_READS = 16  # concurrent reads when a refresh finds many new records on an object store
PARALLEL_READS_FROM = 32


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
    """What one worker currently believes; refreshed by listing or probing, never trusted for correctness.

    It only grows: nothing is removed from ``individuals`` or ``deaths``. ``deaths`` maps a dead
    step to its tombstone, or to ``{"step", "killed_at_step"}`` when the death was learnt from a
    child's record or a selection (the tombstone then exists or is about to).
    """

    individuals: dict[int, dict[str, Any]] = field(default_factory=dict)
    deaths: dict[int, dict[str, Any]] = field(default_factory=dict)
    claims: set[int] = field(default_factory=set)
    refreshed_at: float = float("-inf")


@dataclass
class _Beat:
    """A step's heartbeat as an observer last saw it change, on the observer's clock."""

    value: Any
    since: float
    adoption: int | None  # the adoption its holder runs under (-1: the claimant); None: unknown (old stores)


class Population:
    """A worker's window on the shared population (one instance per worker)."""

    def __init__(self, store: Store, size: int, total_steps: int, worker: str | Identity, lease_seconds: float,
                 refresh_seconds: float, generational: bool = False) -> None:
        self.store = store
        self.generational = generational
        self.size = size
        self.total_steps = total_steps
        self.me = worker if isinstance(worker, Identity) else Identity(worker)
        self.worker = self.me.worker
        self.lease_seconds = lease_seconds
        self.refresh_seconds = refresh_seconds
        self.view = View()
        self._beats: dict[int, _Beat] = {}
        self._next_claim = 0
        self._listing = not store.local  # object stores list after a key; local disks and NFS probe keys
        self._watermark = 0  # every step below it has its child in the view
        self._top_claim = -1  # the highest claimed step in the view
        self._selections_read: dict[int, int] = {}  # step in flight -> its attempts whose selection we read
        self._live_steps: list[int] = []  # sorted; with _live_members, the view's live individuals
        self._live_members: list[Member] = []
        self._folded = (0, 0)  # how many of view.individuals / view.deaths the live list reflects
        self._fresh_claims: set[int] = set()  # steps we claimed and have not started selecting for

    # -- the view ---------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> View:
        view = self.view
        if not force and time.monotonic() - view.refreshed_at < self.refresh_seconds:
            return view
        self._refresh_claims()
        self._refresh_individuals()
        self._refresh_selections()
        view.refreshed_at = time.monotonic()
        return view

    def _refresh_claims(self) -> None:
        if self._listing or self._top_claim < 0:
            after = claim_key(self._top_claim) if self._top_claim >= 0 else "claims/"
            self._claimed(step_of(k) for k in self.store.list_keys_after("claims/", after))
            return
        step = self._top_claim + 1
        while step < self.total_steps and self.store.exists(claim_key(step)):
            self._claimed([step])
            step += 1

    def _refresh_individuals(self) -> None:
        view = self.view
        low = self._advance()
        if self._listing:
            steps: Iterable[int] = (step_of(k) for k in
                                    self.store.list_keys_after("individuals/", f"individuals/{low:0{PAD}d}"))
        else:
            steps = range(low, min(self._top_claim, self.total_steps - 1) + 1)
        missing = [step for step in steps if step not in view.individuals]
        for step, record in zip(missing, self._read_all([individual_key(s) for s in missing])):
            if record is not None:
                view.individuals[step] = record

    def _read_all(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """The records at ``keys``; many at once from an object store (joining a large population
        is otherwise one round trip per individual, minutes at 10,000 on S3)."""
        if len(keys) < PARALLEL_READS_FROM or self.store.local:
            return [self.store.read_json(k) for k in keys]
        with ThreadPoolExecutor(max_workers=PARALLEL_READS) as pool:
            return list(pool.map(self.store.read_json, keys))

    def _refresh_selections(self) -> None:
        """Learn the losers of steps in flight from their selections (a listing, or a probe per step)."""
        if self.generational:
            return
        low = self._advance()
        if self._listing:
            for key in self.store.list_keys_after("selections/", f"selections/{low:0{PAD}d}"):
                parsed = _selection_of(key)
                if parsed and parsed[0] not in self.view.individuals \
                        and parsed[1] >= self._selections_read.get(parsed[0], 0):
                    self._read_selection(*parsed)
        else:
            for step in self._pending(low):
                if step >= self.size:
                    attempt = self._selections_read.get(step, 0)
                    while self._read_selection(step, attempt):
                        attempt += 1
        self._selections_read = {s: a for s, a in self._selections_read.items() if s >= low}

    def _read_selection(self, step: int, attempt: int) -> bool:
        record = self.store.read_json(selection_key(step, attempt))
        if record is None:
            return False
        self._selections_read[step] = attempt + 1
        self._learn_death(record.get("loser"), step)
        return True

    def _learn_death(self, loser: Any, step: int) -> None:
        if isinstance(loser, int) and not isinstance(loser, bool) and loser not in self.view.deaths:
            self.view.deaths[loser] = {"step": loser, "killed_at_step": step}

    def _claimed(self, steps: Iterable[int]) -> None:
        for step in steps:
            self.view.claims.add(step)
            self._top_claim = max(self._top_claim, step)

    def _advance(self) -> int:
        """The watermark, moved past every step whose child the view now holds."""
        while self._watermark in self.view.individuals:
            self._watermark += 1
        return self._watermark

    def _pending(self, low: int) -> list[int]:
        """Claimed steps (below total_steps) whose child the view does not hold; all are >= ``low``."""
        top = min(self._top_claim, self.total_steps - 1)
        return [s for s in range(low, top + 1) if s in self.view.claims and s not in self.view.individuals]

    def live(self) -> list[Member]:
        self._fold()
        return list(self._live_members)

    def _fold(self) -> None:
        """Bring the sorted live list up to date with what the view learnt since (O(new), not O(P))."""
        view = self.view
        seen_individuals, seen_deaths = self._folded  # the view only grows (see View)
        for step in _newest(view.individuals, len(view.individuals) - seen_individuals):
            record = view.individuals[step]
            self._learn_death(record.get("loser"), step)
            if step not in view.deaths:
                member = Member(step, float(record["fitness"]))
                index = bisect.bisect_left(self._live_steps, step)
                if index == len(self._live_steps) or self._live_steps[index] != step:
                    self._live_steps.insert(index, step)
                    self._live_members.insert(index, member)
        for step in _newest(view.deaths, len(view.deaths) - seen_deaths):
            index = bisect.bisect_left(self._live_steps, step)
            if index < len(self._live_steps) and self._live_steps[index] == step:
                del self._live_steps[index]
                del self._live_members[index]
        self._folded = (len(view.individuals), len(view.deaths))

    def finished(self) -> bool:
        return self._advance() >= self.total_steps

    def ready(self, step: int) -> bool:
        """May ``step`` start? Children wait for the initial population (generational: the previous generation)."""
        if step < self.size:
            return True
        first = (step // self.size - 1) * self.size if self.generational else 0
        low = max(first, self._advance())
        return all(s in self.view.individuals for s in range(low, first + self.size))

    def individual(self, step: int) -> dict[str, Any]:
        record = self.view.individuals.get(step) or self.store.read_json(individual_key(step))
        if record is None:
            raise LookupError(f"individual {step} is missing from the store")
        self.view.individuals[step] = record
        return record

    # -- owning a step ----------------------------------------------------------------------

    def claim_next(self) -> int | None:
        """Own a fresh step (create-once on its claim), or None when none may start now."""
        step = max(self._next_claim, self._top_claim + 1)
        while step < self.total_steps:
            if not self.ready(step):
                return None
            if self.store.create_json(claim_key(step), {"step": step, **self.me.fields(),
                                                        "created_at": time.time()}):
                self._claimed([step])
                self._next_claim = step + 1
                if step >= self.size:
                    self._fresh_claims.add(step)
                return step
            self._claimed([step])
            step += 1
        self._next_claim = step
        return None

    def lapsed(self) -> list[int]:
        """Claimed steps with no child whose heartbeat has been quiet for a lease on our clock."""
        now = time.monotonic()
        out = []
        for step in self._pending(self._advance()):
            beat = self.store.read_json(heartbeat_key(step))
            value = None if beat is None else (beat.get("holder"), beat.get("seq"))
            seen = self._beats.get(step)
            if seen is None or seen.value != value:
                self._beats[step] = _Beat(value, now, -1 if beat is None else _adoption_of(beat))
            elif now - seen.since > self.lease_seconds:
                out.append(step)
        for step in list(self._beats):
            if step in self.view.individuals:
                del self._beats[step]
        return out

    def adopt(self, step: int) -> int | None:
        """Take over a lapsed step: the adoption's index, or None if someone else holds it now.

        Only the adoption that follows the one whose silence we timed may be created: finding more
        adoptions than that means another worker took the step over after the beat we saw, and its
        own beat may not be visible yet, so we time the step afresh instead.
        """
        index = len(self.store.list_keys(f"adoptions/{step:0{PAD}d}-"))
        seen = self._beats.get(step)
        expected = None if seen is None or seen.adoption is None else seen.adoption + 1
        if expected is not None and index != expected:
            beat = self.store.read_json(heartbeat_key(step))
            value = None if beat is None else (beat.get("holder"), beat.get("seq"))
            self._beats[step] = _Beat(value, time.monotonic(), index - 1)
            return None
        return self._create_adoption(step, index)

    def _create_adoption(self, step: int, index: int) -> int | None:
        won = self.store.create_json(adoption_key(step, index), {"step": step, "index": index, **self.me.fields(),
                                                                  "created_at": time.time()})
        if won:
            self._beats.pop(step, None)
            return index
        return None

    def orphans(self) -> list[int]:
        """Steps in flight whose holder is known dead (an earlier incarnation of our slot): adopt them now."""
        if self.me.slot is None:
            return []
        return [step for step in self._pending(self._advance()) if self.me.predecessor_dead(self._holder(step)[1])]

    def _holder(self, step: int) -> tuple[int, dict[str, Any] | None]:
        """(adoptions so far, the record of the step's current holder: its last adopter, else its claimant)."""
        keys = self.store.list_keys(f"adoptions/{step:0{PAD}d}-")
        record = self.store.read_json(keys[-1] if keys else claim_key(step))
        return len(keys), record

    def adopt_orphan(self, step: int) -> int | None:
        """Take over a step from its dead holder at once (no lease to wait): the adoption's index, or None."""
        index, holder = self._holder(step)
        if not self.me.predecessor_dead(holder):
            return None
        return self._create_adoption(step, index)

    def heartbeat(self, step: int, holder: str, seq: int, adoption: int = -1) -> None:
        """``adoption``: the index of the adoption we hold the step under (-1: we claimed it)."""
        self.store.put_json(heartbeat_key(step), {"step": step, "holder": holder, "seq": seq,
                                                  "adoption": adoption, **self.me.fields()})

    # -- selection and death, exactly once per step -----------------------------------------

    def settle_selection(self, step: int, choose, idle=None) -> tuple[Choice, int]:
        """The step's (parent, loser) and attempt number, killing the loser exactly once.

        ``choose(live, attempt)`` proposes a pair when attempt k has no record yet, or None when
        too few are live; ``idle()`` is then called before waiting. The live count comes back only
        as steps in flight finish, and some of those may need adopting first: with nobody else left
        to adopt them, a worker that only waited here would wait forever.
        Replaying a step reads the records already written and continues where they stop; a step
        we have just claimed has none to read (should one appear anyway, its create-once wins).
        """
        attempt = 0
        fresh = step in self._fresh_claims
        self._fresh_claims.discard(step)
        while True:
            record = None if fresh else self.store.read_json(selection_key(step, attempt))
            fresh = False
            if record is None:
                self.refresh(force=attempt > 0)
                choice = choose(self.live(), attempt)
                if choice is None:
                    if idle is not None:
                        idle()
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
        if self.store.create_json(death_key(loser), tombstone):  # the stored tombstone is ours
            self.view.deaths[loser] = tombstone
            return True
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


def _newest(entries: dict[int, Any], count: int) -> list[int]:
    """The ``count`` keys most recently added to ``entries`` (dicts keep insertion order)."""
    return list(itertools.islice(reversed(entries), max(0, count)))


def _adoption_of(beat: dict[str, Any]) -> int | None:
    """The adoption a heartbeat's holder runs under; None for beats written before beats said so."""
    value = beat.get("adoption")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= -1 else None


def _selection_of(key: str) -> tuple[int, int] | None:
    """(step, attempt) of ``selections/<step>-<attempt>.json``, None for anything else."""
    name = key.rsplit("/", 1)[-1]
    head, _, tail = name.partition("-")
    attempt = tail.split(".", 1)[0]
    if not (head.isdigit() and attempt.isdigit()):
        return None
    return int(head), int(attempt)
