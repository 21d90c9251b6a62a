"""The population as workers see it: a cached view of the store plus the step protocol.

Every action that changes the population is a create-once record, so any number of
actors (the claimant, a zombie that woke up late, adopters) can replay a step and
converge on the same outcome:

    claims/<s>              who started step s, and usually attempt 0's (parent, loser)
    selections/<s>-<k>      attempt k's (parent, loser) when the claim carries none; the
                            first whose tombstone names step s and attempt k is the step's
                            selection
    deaths/<loser>          the tombstone: killed at step s, attempt k
    weights/<s>-<nonce>     the trained child's weights (one per trainer; losers are garbage)
    individuals/<s>         the child; whoever creates it first finished the step
    generations/<g>         generational mode: generation g's genomes, built once by
                            whoever first finds generation g-1 complete
    adoptions/<s>-<j>       j-th takeover of a step whose holder went quiet or died
    heartbeats/<s>[-<j>]    soft, overwritten: each holder's progress counter (adopter j: -<j>)
    log/<block>/<s>.<mark>  what selection needs, in keys (evolve/store/keys.py names them, evolve/store/marks.py)

Leases are judged on the observer's own monotonic clock: a step is lapsed when its
heartbeat has not changed for ``lease_seconds`` of the observer's time, so no two
hosts' clocks are ever compared. At most one adoption of a step is live at a time:
adoption j+1 is created only by an observer that saw adoption j's own heartbeat (or, for
j = 0, the claimant's silence) go quiet for a lease, or that knows adoption j's holder is
dead (a restarted incarnation of the same worker slot, :mod:`evolve.engine.liveness`). An
observer that finds more adoptions than the beat it timed names starts its clock again.

A worker needs the live set and the fitness of the individuals it samples, not every
record: it learns them from the log (:mod:`evolve.store.marks`), the small marks after the view's
*watermark* (every step below it has its child in the view), listed once per refresh (locally:
``log/`` and each block folder in use from the watermark's on, parsing only names not seen
before; claims land out of order, so a later block fills before an earlier one). So a step costs
the same store work with 1 or 250 workers and with 100 or 10,000 individuals; a record is read
only when its genome is needed (a parent). Heartbeats are listed too (one listing, with each
key's change token), at most every ``lease / 4`` and only while a step has been in flight that
long: a lease is judged on that time scale. A worker with a rank claims in its own lane of steps
(``r, r + W, ...``), so workers that claim at the same moment do not collide.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from evolve.engine.liveness import Identity
from evolve.store.keys import (LOG_BLOCK, PAD, Mark, adoption_key, claim_key, claim_mark, death_key, done_mark,
                         heartbeat_key, individual_key, kill_mark, log_folder, parse_mark,
                         selection_key, step_and_index, step_of)
from evolve.store.marks import read_selection
from evolve.engine.selection import Choice, Member
from evolve.store.backend import Store

PARALLEL_READS = 16  # concurrent reads when a worker needs many records at once from an object store
PARALLEL_READS_FROM = 32
MAX_CLAIM_WIDTH = 1_024.0

log = logging.getLogger("evolve.engine.population")


@dataclass
class View:
    """What one worker currently believes; refreshed from the log, never trusted for correctness.

    It only grows. ``done`` holds every finished step the view knows of, with its fitness and
    loser (from its mark); ``individuals`` the full records read so far (a cache); ``deaths``
    maps a dead step to its tombstone, or to ``{"step", "killed_at_step"}`` when the death was
    learnt from a mark (the tombstone then exists).
    """

    done: dict[int, Mark] = field(default_factory=dict)
    individuals: dict[int, dict[str, Any]] = field(default_factory=dict)
    deaths: dict[int, dict[str, Any]] = field(default_factory=dict)
    refreshed_at: float = float("-inf")


@dataclass
class _Beat:
    """A step's heartbeat as an observer last saw it change, on the observer's clock."""

    value: Any
    since: float
    adoption: int  # the adoption its holder runs under (-1: the claimant)


class Population:
    """A worker's window on the shared population (one instance per worker)."""

    def __init__(self, store: Store, size: int, total_steps: int, worker: str | Identity, lease_seconds: float,
                 refresh_seconds: float, claimers: int = 1, rank: int | None = None) -> None:
        """``claimers``: how many workers the run starts at once; a claim spreads over at least that
        many free steps (they would otherwise all try the lowest one together). ``rank``: this
        worker's place among them (0 .. claimers - 1), if it has one: it then prefers the steps
        congruent to its rank, so that workers claiming at the same moment pick different steps."""
        self.store = store
        self.size = size
        self.total_steps = total_steps
        self.me = worker if isinstance(worker, Identity) else Identity(worker)
        self.worker = self.me.worker
        self.lease_seconds = lease_seconds
        self.refresh_seconds = refresh_seconds
        self.view = View()
        self._beats: dict[int, _Beat] = {}
        self._claims: set[int] = set()  # steps at or past the watermark known to be claimed
        self._parents: dict[int, int] = {}  # step at or past the watermark -> the parent its kill mark names
        self.killed: list[int] = []  # individuals whose tombstone we wrote, not yet handed to the collector
        # about how many workers claim at once: how many free steps a claim spreads over (never fewer
        # than the run's workers: a claim's view is up to refresh_seconds old, and in that time each
        # of them may have claimed a step this view has not seen)
        self._least_width = max(1.0, float(claimers))
        self._width = self._least_width
        self._lane = None if rank is None else (max(1, claimers), rank % max(1, claimers))  # (stride, offset)
        self._chance = random.Random()  # where to claim only spreads collisions; nothing a child depends on
        self._listing = not store.local  # one listing across log folders (locally: the folders in use, each once)
        self._watermark = 0  # every step below it has its child in the view
        self._seen: dict[int, set[str]] = {}  # log block at or past the watermark's -> names (S3: keys) learnt
        self._top_claim = -1  # the highest claimed step in the view
        self._live_steps: list[int] = []  # sorted; with _live_members, the view's live individuals
        self._live_members: list[Member] = []
        self._folded = (0, 0)  # how many of view.done / view.deaths the live list reflects
        self._fresh_claims: dict[int, dict[str, Any] | None] = {}  # claimed, not yet settled -> attempt 0 in the claim
        self._waiting: dict[int, tuple[int, bool]] = {}  # settling, too few live -> (attempt, bare claim)
        self.last_refresh_s = 0.0  # how long the last refresh took (benchmarks)
        self._lapse_every = lease_seconds / 4  # as often as holders beat: each listing sees a live one move
        self._later: Callable[[Callable[[], None]], Any] | None = None  # see defer_marks
        self._lapse_checked = float("-inf")

    # -- the view ---------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> View:
        view = self.view
        started = time.monotonic()
        if not force and started - view.refreshed_at < self.refresh_seconds:
            return view
        low = self._advance()
        first = f"{log_folder(low)}{low:0{PAD}d}"
        for key in sorted(self._fresh_log(low)):
            mark = parse_mark(key) if key >= first else None
            if mark is not None:
                self._learn(mark)
        view.refreshed_at = time.monotonic()
        self.last_refresh_s = view.refreshed_at - started
        return view

    def _fresh_log(self, low: int) -> list[str]:
        """The log marks of steps >= ``low`` (and a few below, in its block) not seen by an earlier refresh.

        One listing after ``low`` on an object store; locally one of ``log/`` and one per block folder
        in use from ``low``'s on, and only the names not seen before are made keys and parsed (a
        block folder holds up to 3 x 500 names).
        """
        block = low // LOG_BLOCK
        for old in [b for b in self._seen if b < block]:
            del self._seen[old]
        if self._listing:
            fresh = []
            for key in self.store.list_keys_after("log/", f"{log_folder(low)}{low:0{PAD}d}"):
                seen = self._seen.setdefault(int(key[4:13]), set())
                if key not in seen:
                    seen.add(key)
                    fresh.append(key)
            return fresh
        fresh = []
        in_use = sorted(int(n) for n in self.store.list_names("log/") if n.isdigit() and int(n) >= block)
        for block in in_use:  # claims land out of order: a later block is in use before this one is full
            folder = f"log/{block:09d}/"
            names = self.store.list_names(folder)
            seen = self._seen.setdefault(block, set())
            new = names.difference(seen)
            seen |= new
            fresh += [folder + name for name in new]
        return fresh

    def _learn(self, mark: Mark) -> None:
        self._claimed([mark.step])
        if mark.parent is not None and mark.step >= self._watermark:
            self._parents[mark.step] = mark.parent
        if mark.loser is not None:
            self._learn_death(mark.loser, mark.step)
        if mark.done and mark.step not in self.view.done:
            self.view.done[mark.step] = mark

    def _learn_death(self, loser: Any, step: int) -> None:
        if isinstance(loser, int) and not isinstance(loser, bool) and loser not in self.view.deaths:
            self.view.deaths[loser] = {"step": loser, "killed_at_step": step}

    def _read_all(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """The records at ``keys``; many at once from an object store."""
        if len(keys) < PARALLEL_READS_FROM or self.store.local:
            return [self.store.read_json(k) for k in keys]
        with ThreadPoolExecutor(max_workers=PARALLEL_READS) as pool:
            return list(pool.map(self.store.read_json, keys))

    def records(self, steps: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The records of finished ``steps`` (read once, then cached); generational mode needs whole generations."""
        missing = [s for s in steps if s not in self.view.individuals]
        for step, record in zip(missing, self._read_all([individual_key(s) for s in missing])):
            if record is not None:
                self.view.individuals[step] = record
        return {s: self.view.individuals[s] for s in steps if s in self.view.individuals}

    def finished_child(self, step: int, record: dict[str, Any]) -> None:
        """``record`` is step's child in the store (ours or the winner's): mark the log and remember it."""
        self.publish_child(step, record)
        self.learn_child(step, record)

    def publish_child(self, step: int, record: dict[str, Any]) -> None:
        """Write the log mark of step's child (store work only: safe from another thread than the view's)."""
        mark = _done(step, record)
        self.store.put_json(done_mark(step, mark.loser, mark.fitness), {})

    def learn_child(self, step: int, record: dict[str, Any]) -> None:
        self.view.individuals[step] = record
        self._learn(_done(step, record))

    def child_exists(self, step: int) -> bool:
        """Is step's child already in the store? (Its mark is then written again: a crash lost it.)"""
        record = self.view.individuals.get(step) or self.store.read_json(individual_key(step))
        if record is None:
            return False
        self.finished_child(step, record)
        return True

    def defer_marks(self, later: Callable[[Callable[[], None]], Any] | None) -> None:
        """Hand claim and kill marks to ``later`` (a worker writes them while the step trains) instead
        of writing them at once (None).

        Marks are hints (a view is never trusted for correctness): one written a few ms late costs
        at most a claim that collides or a loser chosen again, whose create-once then refuses it;
        one a crash loses is written again on resume.
        """
        self._later = later

    def _mark(self, key: str) -> None:
        if self._later is None:
            self.store.put_json(key, {})
        else:
            self._later(lambda: self._put_mark(key))

    def _put_mark(self, key: str) -> None:
        try:
            self.store.put_json(key, {})
        except Exception as exc:  # noqa: BLE001 - a lost hint; resume writes it again
            log.warning("log mark %s not written: %s", key, exc)

    def _claimed(self, steps: Iterable[int]) -> None:
        now = time.monotonic()
        for step in steps:
            self._top_claim = max(self._top_claim, step)
            if step >= self._watermark:
                self._claims.add(step)
                # first seen: timed as having no beat (a claimant's first comes a quarter lease after its claim)
                self._beats.setdefault(step, _Beat((None, None), now, -1))

    def _advance(self) -> int:
        """The watermark, moved past every step whose child the view now holds."""
        while self._watermark in self.view.done:
            self._claims.discard(self._watermark)
            self._parents.pop(self._watermark, None)
            self._beats.pop(self._watermark, None)
            self._watermark += 1
        return self._watermark

    def _pending(self, low: int) -> list[int]:
        """Claimed steps (below total_steps) whose child the view does not hold; all are >= ``low``."""
        return sorted(s for s in self._claims if low <= s < self.total_steps and s not in self.view.done)

    def in_flight(self) -> dict[int, int | None]:
        """Steps in flight in the view -> the parent they inherit from (None: not known from the log yet)."""
        return {s: self._parents.get(s) for s in self._pending(self._advance())}

    def live(self, before: int | None = None) -> Sequence[Member]:
        """The live individuals in the view (sorted by step); with ``before``, only those of earlier steps.
        Read in place, not copied (a choice draws a few of P), so good until the view next changes."""
        self._fold()
        members = self._live_members
        return _Prefix(members, len(members) if before is None else bisect.bisect_left(self._live_steps, before))

    def _fold(self) -> None:
        """Bring the sorted live list up to date with what the view learnt since (O(new), not O(P))."""
        view = self.view
        seen_done, seen_deaths = self._folded  # the view only grows (see View)
        for step in _newest(view.done, len(view.done) - seen_done):
            if step not in view.deaths:
                member = Member(step, float(view.done[step].fitness))
                index = bisect.bisect_left(self._live_steps, step)
                if index == len(self._live_steps) or self._live_steps[index] != step:
                    self._live_steps.insert(index, step)
                    self._live_members.insert(index, member)
        for step in _newest(view.deaths, len(view.deaths) - seen_deaths):
            index = bisect.bisect_left(self._live_steps, step)
            if index < len(self._live_steps) and self._live_steps[index] == step:
                del self._live_steps[index]
                del self._live_members[index]
        self._folded = (len(view.done), len(view.deaths))

    def finished(self) -> bool:
        return self._advance() >= self.total_steps

    def ready(self, step: int, waits_for: Callable[[int], range] | None = None) -> bool:
        """May ``step`` start? The initial population may; a child waits for the steps ``waits_for(step)``
        (the breeder's: the initial population, or the previous generation) to be done."""
        if step < self.size:
            return True
        needed = waits_for(step) if waits_for is not None else range(self.size)
        low = max(needed.start, self._advance())
        return all(s in self.view.done for s in range(low, needed.stop))

    def individual(self, step: int) -> dict[str, Any]:
        record = self.view.individuals.get(step) or self.store.read_json(individual_key(step))
        if record is None:
            raise LookupError(f"individual {step} is missing from the store")
        self.view.individuals[step] = record
        return record

    # -- owning a step ----------------------------------------------------------------------

    def claim_next(self, chooser=None, waits_for: Callable[[int], range] | None = None) -> int | None:
        """Own a fresh step (create-once on its claim), or None when none may start now.

        The view is refreshed only when older than ``refresh_seconds``: a worker knows its own claims,
        and the claim marks tell it which steps others claimed. A view that may be stale is refreshed
        at once when the claim collides or no step is free, so the listing is paid about once per
        ``refresh_seconds`` alone and once per step where many workers claim (each collision costs
        a create, and a read on object stores). ``chooser(step)``: a ``choose`` as
        :meth:`settle_selection` takes; the claim then carries attempt 0's selection. ``waits_for``:
        as :meth:`ready` takes.
        """
        before = self.view.refreshed_at
        fresh = self.refresh().refreshed_at != before
        self._width = max(self._least_width, self._width * 0.95)
        while True:
            step = self._pick(self._free(max(1, round(self._width)), waits_for), waits_for)
            if step is not None and self.claim(step, chooser):
                return step
            if not fresh:  # our view may be behind: catch up before concluding none is free, or a crowd
                self.refresh(force=True)
                fresh = True
                continue
            if step is None:
                return None
            self._width = min(2.0 * self._width + 1.0, MAX_CLAIM_WIDTH)  # others claim at the same moment

    def _pick(self, free: list[int], waits_for: Callable[[int], range] | None = None) -> int | None:
        """The free step to claim, or None to wait: with a rank, the next step of this worker's lane;
        without, one of ``free`` (the lowest free steps) at random.

        Workers that finish together (equal training times keep them in step) claim together, from
        views that cannot show each other's claims yet: at random among W free steps, a third of
        them collided. Worker r of W claims steps r, r + W, r + 2W, ... so they do not, and takes a
        step of another lane only when that lane is two rounds behind its own (its worker is slow,
        or gone): the watermark, and with it every listing, stays within two rounds of the newest
        claim. At a run's end a worker whose lane is done waits rather than race the owners of the
        last steps; it takes them only if they fall two rounds behind.
        """
        if not free:
            return None
        if self._lane is None:
            return free[0] if len(free) == 1 else self._chance.choice(free)
        stride, offset = self._lane
        step = free[0] + (offset - free[0]) % stride
        while step < self.total_steps and (step in self._claims or step in self.view.done):
            step += stride
        behind = [s for s in free if s + 2 * stride <= step]
        if behind:
            return behind[0] if len(behind) == 1 else self._chance.choice(behind)
        return step if step < self.total_steps and self.ready(step, waits_for) else None

    def _free(self, count: int, waits_for: Callable[[int], range] | None = None) -> list[int]:
        """Up to ``count`` of the lowest steps not known to be claimed that may start now.

        A claim lands on one of them at random: workers that finish together would otherwise all
        try the same next step and collide once per worker ahead of them (W / 2 wasted creates a
        claim, each read back on object stores). How many to spread over doubles after each
        collision and shrinks by 5% a claim, so it follows how many workers claim at once. The
        steps skipped are left for the next claims.
        """
        out: list[int] = []
        step = self._advance()
        while step < self.total_steps and len(out) < count:
            if step not in self._claims and step not in self.view.done:
                if not self.ready(step, waits_for):
                    break
                out.append(step)
            step += 1
        return out

    def claim(self, step: int, chooser=None) -> bool:
        """Create step's claim (and its mark): True if it is ours now. ``claim_next`` picks the step.

        With ``chooser``, a child's claim carries attempt 0's selection when one can be made now.
        """
        record = {"step": step, **self.me.fields(), "created_at": time.time()}
        choice = None
        if chooser is not None and step >= self.size:
            choice = self._propose(step, 0, chooser(step))
        if choice is not None:
            record["selection"] = self._selection(step, 0, choice)
        won = self.store.create_json(claim_key(step), record)
        self._claimed([step])
        if won:
            self._mark(claim_mark(step))
            if step >= self.size:
                self._fresh_claims[step] = record.get("selection")
        return won

    def _propose(self, step: int, attempt: int, choose) -> Choice | None:
        # claims land out of order: prefer parents and losers from earlier steps, as in a serial run
        return choose(self.live(before=step), attempt) or choose(self.live(), attempt)

    def _selection(self, step: int, attempt: int, choice: Choice) -> dict[str, Any]:
        return {"step": step, "attempt": attempt, "parent": choice.parent, "loser": choice.loser,
                "worker": self.worker}

    def lapsed(self) -> list[int]:
        """Claimed steps with no child whose heartbeat has been quiet for a lease on our clock.

        One listing of the heartbeats of steps in flight, at most every ``lease / 4`` seconds, and
        (after the first) only while one of them has shown no change for that long: a step first
        seen in the view is timed from then as having no beat (its claimant beats first a quarter
        lease after claiming, so a listing before then could show nothing else), and a run whose
        steps are shorter than a quarter lease lists no heartbeats at all. A holder beats under its own key
        (``heartbeats/<s>.json`` for the claimant, ``<s>-<j>.json`` for adopter j), so the listing
        also says which holder's silence is being timed.
        """
        now = time.monotonic()
        if now - self._lapse_checked < self._lapse_every:
            return []
        low = self._advance()
        pending = self._pending(low)
        if self._lapse_checked > float("-inf") and not any(
                s in self._beats and now - self._beats[s].since > self._lapse_every for s in pending):
            return []  # every step in flight changed or appeared within a beat: a listing would say nothing new
        self._lapse_checked = now
        latest: dict[int, tuple[int, str, str]] = {}  # step -> (adoption, key, change token) of its newest holder
        if pending:
            for key, token in self.store.list_versions_after("heartbeats/", f"heartbeats/{low:0{PAD}d}").items():
                parsed = step_and_index(key)  # (step, adopter j), or (step, None) for the claimant's beat
                if parsed:
                    step, adoption = parsed[0], -1 if parsed[1] is None else parsed[1]
                    if adoption >= latest.get(step, (-2,))[0]:
                        latest[step] = (adoption, key, token)
        out = []
        for step in pending:
            adoption, key, token = latest.get(step, (-1, None, None))
            value = (key, token)
            seen = self._beats.get(step)
            if seen is None or seen.value != value:
                self._beats[step] = _Beat(value, now, adoption)
            elif now - seen.since > self.lease_seconds:
                out.append(step)
        return out

    def adopt(self, step: int) -> int | None:
        """Take over a lapsed step: the adoption's index, or None if someone else holds it now.

        Only the adoption that follows the holder whose silence we timed may be created: finding
        more adoptions means another worker took the step over after the beat we saw, and its own
        beat may not be visible yet, so we time the step afresh, now as adoption ``index - 1``'s.
        """
        index = len(self.store.list_keys(f"adoptions/{step:0{PAD}d}-"))
        seen = self._beats.get(step)
        if seen is not None and index != seen.adoption + 1:
            self._beats[step] = _Beat(seen.value, time.monotonic(), index - 1)
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
        self._probe_claims()
        return [step for step in self._pending(self._advance()) if self.me.predecessor_dead(self._holder(step)[1])]

    def _probe_claims(self) -> None:
        """Learn the claims whose marks never reached the log: one listing, at start-up only.

        Claim marks are written after the claim, by the writer thread, and claims land out of order
        (on a random one of the lowest free steps): a predecessor killed between its claim and its
        mark may leave a claim below others the log knows as well as above them.
        """
        low = self._advance()
        keys = self.store.list_keys_after("claims/", f"claims/{low:0{PAD}d}")
        self._claimed(s for s in map(step_of, keys) if s < self.total_steps)

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

    def heartbeat(self, step: int, holder: str, seq: int, adoption: int = -1) -> str:
        """Beat for ``step``, held under adoption ``adoption`` (-1: we claimed it); returns the key."""
        key = heartbeat_key(step, adoption)
        self.store.put_json(key, {"step": step, "holder": holder, "seq": seq, "adoption": adoption,
                                  **self.me.fields()})
        return key

    # -- selection and death, exactly once per step -----------------------------------------

    def settle_selection(self, step: int, choose) -> tuple[Choice, int] | None:
        """The step's (parent, loser) and attempt number, killing the loser exactly once; or None
        while too few are live to choose (call again: it goes on where it stopped).

        ``choose(live, attempt)`` proposes a pair when attempt k has no record yet, or None when
        too few are live. The live count comes back only as steps in flight finish, and some of
        those may need adopting first: the caller does that between two calls (a worker that only
        waited would wait forever with nobody else left to adopt them).
        Replaying a step reads the records already written and continues where they stop; a step
        we have just claimed has none to read (should one appear anyway, its create-once wins).
        """
        if step in self._waiting:  # a call that found too few live: on from there, with a fresh view
            attempt, bare_claim = self._waiting.pop(step)
            fresh, carried, ours = False, None, False
            self.refresh(force=True)
        else:
            attempt = 0
            fresh = step in self._fresh_claims
            carried = self._fresh_claims.pop(step, None)
            bare_claim = fresh and carried is None  # our claim carries no selection: never read it back
            ours = fresh  # only an adopter of our step writes its selections: create first, read if refused
        while True:
            if fresh:  # our own claim: attempt 0 is in it, or nobody has chosen it yet
                record = carried
            elif ours:
                record = None
            elif bare_claim:
                record = self.store.read_json(selection_key(step, attempt))
            else:
                record = read_selection(self.store, step, attempt)
            fresh = False
            if record is None:
                self.refresh(force=attempt > 0)
                choice = self._propose(step, attempt, choose)
                if choice is None:
                    self._waiting[step] = (attempt, bare_claim)
                    return None
                mine = self._selection(step, attempt, choice)
                won, theirs = self.store.create_or_read_json(selection_key(step, attempt), mine)
                ours = ours and won
                record = mine if won else theirs
            choice = Choice(parent=int(record["parent"]), loser=int(record["loser"]))
            if self.kill(choice.loser, step, attempt, choice.parent):
                return choice, attempt
            attempt += 1

    def kill(self, loser: int, step: int, attempt: int, parent: int | None) -> bool:
        """Write the loser's tombstone for (step, attempt); True if the tombstone names them."""
        tombstone = {"step": loser, "killed_at_step": step, "attempt": attempt, "parent": parent,
                     "by": self.worker, "created_at": time.time()}
        won, death = self.store.create_or_read_json(death_key(loser), tombstone)
        if won:  # the stored tombstone is ours
            self.view.deaths[loser] = tombstone
            self.killed.append(loser)
        else:
            self.view.deaths[loser] = death
            if (death.get("killed_at_step"), death.get("attempt")) != (step, attempt):
                return False
        self._mark(kill_mark(step, attempt, loser, parent))  # again on a replay: a crash may have lost it
        return True


class _Prefix(Sequence):
    """The first ``n`` members of the view's live list, read in place (a copy would cost O(P) a step)."""

    __slots__ = ("_items", "_n")

    def __init__(self, items: list[Member], n: int) -> None:
        self._items, self._n = items, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return self._items[:self._n][index]
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return self._items[index % self._n]


def _done(step: int, record: dict[str, Any]) -> Mark:
    loser = record.get("loser")
    loser = loser if isinstance(loser, int) and not isinstance(loser, bool) else None
    return Mark(step, True, loser, float(record["fitness"]))


def _newest(entries: dict[int, Any], count: int) -> list[int]:
    """The ``count`` keys most recently added to ``entries`` (dicts keep insertion order)."""
    return list(itertools.islice(reversed(entries), max(0, count)))
