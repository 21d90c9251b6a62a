"""The population as workers see it: a cached view of the store, and the step protocol on top.

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

:class:`Population` does three jobs, one module each: this one holds the view of the log;
:mod:`evolve.engine.claims` owning a step (claims, leases, adoptions, heartbeats);
:mod:`evolve.engine.settlement` selection and death, exactly once per step.

A worker needs the live set and the fitness of the individuals it samples, not every
record: it learns them from the log (:mod:`evolve.store.marks`), the small marks after the view's
*watermark* (every step below it has its child in the view), listed once per refresh (locally:
``log/`` and each block folder in use from the watermark's on, parsing only names not seen
before; claims land out of order, so a later block fills before an earlier one). So a step costs
the same store work with 1 or 250 workers and with 100 or 10,000 individuals; a record is read
only when its genome is needed (a parent).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from evolve.engine.claims import Claims, _Beat
from evolve.engine.liveness import Identity
from evolve.engine.selection import Member
from evolve.engine.settlement import Settlement
from evolve.store.backend import Store
from evolve.store.keys import LOG_BLOCK, PAD, Mark, done_mark, individual_key, log_folder, parse_mark

PARALLEL_READS = 16  # concurrent reads when a worker needs many records at once from an object store
PARALLEL_READS_FROM = 32

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


class Population(Claims, Settlement):
    """A worker's window on the shared population (one instance per worker).

    The view is here; owning a step comes from :class:`~evolve.engine.claims.Claims`, selection
    and death from :class:`~evolve.engine.settlement.Settlement`.
    """

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
        self._claims: set[int] = set()  # steps at or past the watermark known to be claimed
        self._parents: dict[int, int] = {}  # step at or past the watermark -> the parent its kill mark names
        self._listing = not store.local  # one listing across log folders (locally: the folders in use, each once)
        self._watermark = 0  # every step below it has its child in the view
        self._seen: dict[int, set[str]] = {}  # log block at or past the watermark's -> names (S3: keys) learnt
        self._top_claim = -1  # the highest claimed step in the view
        self._live_steps: list[int] = []  # sorted; with _live_members, the view's live individuals
        self._live_members: list[Member] = []
        self._folded = (0, 0)  # how many of view.done / view.deaths the live list reflects
        self.last_refresh_s = 0.0  # how long the last refresh took (benchmarks)
        self._later: Callable[[Callable[[], None]], Any] | None = None  # see defer_marks
        self._init_claims(claimers, rank)
        self._init_settlement()

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
        """Note ``steps`` as claimed, and start timing the lease of each one first seen (see ``Claims.lapsed``)."""
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
