"""Owning a step: claiming it, timing its holder's lease, adopting it when the holder is gone.

A step is owned through create-once records (see :mod:`evolve.engine.population` for all of them):

    claims/<s>              who started step s, and usually attempt 0's (parent, loser)
    adoptions/<s>-<j>       j-th takeover of a step whose holder went quiet or died
    heartbeats/<s>[-<j>]    soft, overwritten: each holder's progress counter (adopter j: -<j>)
    heartbeats/<s>[-<j>].released   soft: that holder gave the step up (stopped): adopt it without a lease

Leases are judged on the observer's own monotonic clock: a step is lapsed when its
heartbeat has not changed for ``lease_seconds`` of the observer's time, so no two
hosts' clocks are ever compared. At most one adoption of a step is live at a time:
adoption j+1 is created only by an observer that saw adoption j's own heartbeat (or, for
j = 0, the claimant's silence) go quiet for a lease, or that knows adoption j's holder is
dead (a restarted incarnation of the same worker slot, :mod:`evolve.engine.liveness`). An
observer that finds more adoptions than the beat it timed names starts its clock again.

Heartbeats are listed (one listing, with each key's change token) at most every ``lease / 4``
and only while a step has been in flight that long: a lease is judged on that time scale. A
worker with a rank claims in its own lane of steps (``r, r + W, ...``), so workers that claim
at the same moment do not collide.

:class:`Claims` holds these methods of :class:`~evolve.engine.population.Population`; they work
on its view (``_claims``, ``_advance``, ``_pending``, ``refresh``, ``ready``) and on the state
:meth:`Claims._init_claims` sets up.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evolve.store.keys import (
    PAD,
    adoption_key,
    claim_key,
    claim_mark,
    heartbeat_key,
    release_key,
    release_of,
    step_and_index,
    step_of,
)

MAX_CLAIM_WIDTH = 1_024.0

log = logging.getLogger("evolve.engine.worker")


@dataclass
class _Beat:
    """A step's heartbeat as an observer last saw it change, on the observer's clock."""

    value: Any
    since: float
    adoption: int  # the adoption its holder runs under (-1: the claimant)


class Claims:
    """Owning a step: the part of :class:`~evolve.engine.population.Population` that claims,
    times leases, adopts and beats."""

    def _init_claims(self, claimers: int, rank: int | None) -> None:
        """``claimers`` and ``rank``: as :class:`~evolve.engine.population.Population` takes them."""
        self._beats: dict[int, _Beat] = {}
        # about how many workers claim at once: how many free steps a claim spreads over (never fewer
        # than the run's workers: a claim's view is up to refresh_seconds old, and in that time each
        # of them may have claimed a step this view has not seen)
        self._least_width = max(1.0, float(claimers))
        self._width = self._least_width
        self._lane = None if rank is None else (max(1, claimers), rank % max(1, claimers))  # (stride, offset)
        self._chance = random.Random()  # where to claim only spreads collisions; nothing a child depends on
        self._fresh_claims: dict[int, dict[str, Any] | None] = {}  # claimed, not yet settled -> attempt 0 in the claim
        self._lapse_every = self.lease_seconds / 4  # as often as holders beat: each listing sees a live one move
        self._lapse_checked = float("-inf")
        self._held_since: dict[int, int] = {}  # step -> an adoption known to exist: older releases are stale

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
        released: dict[int, int] = {}  # step -> the newest holder that gave it up
        if pending:
            for key, token in self.store.list_versions_after("heartbeats/", f"heartbeats/{low:0{PAD}d}").items():
                parsed = step_and_index(key)  # (step, adopter j), or (step, None) for the claimant's beat
                if parsed:
                    step, adoption = parsed[0], -1 if parsed[1] is None else parsed[1]
                    if adoption >= latest.get(step, (-2,))[0]:
                        latest[step] = (adoption, key, token)
                elif (gave_up := release_of(key)) is not None:
                    released[gave_up[0]] = max(gave_up[1], released.get(gave_up[0], -2))
        out = []
        for step in pending:
            adoption, key, token = latest.get(step, (-1, None, None))
            value = (key, token)
            seen = self._beats.get(step)
            if step in released and released[step] >= max(adoption, self._held_since.get(step, -1)):
                # the newest holder gave it up: no lease to wait
                self._beats[step] = _Beat(value, float("-inf"), released[step])
                out.append(step)
            elif seen is None or seen.value != value:
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
            if seen.since == float("-inf"):  # a release by a holder already taken over: stale from now on
                self._held_since[step] = index - 1
                self._forget_release(step, seen.adoption)
            self._beats[step] = _Beat(seen.value, time.monotonic(), index - 1)
            return None
        return self._create_adoption(step, index)

    def _forget_release(self, step: int, adoption: int) -> None:
        try:
            self.store.delete(release_key(step, adoption))
        except Exception:  # noqa: BLE001 - a note left behind is ignored by every observer that counted adoptions
            pass

    def _create_adoption(self, step: int, index: int) -> int | None:
        won = self.store.create_json(adoption_key(step, index), {"step": step, "index": index, **self.me.fields(),
                                                                  "created_at": time.time()})
        if won:
            self._beats.pop(step, None)
            self._forget_release(step, index - 1)  # the holder before us may have given it up
            return index
        return None

    def release(self, step: int, adoption: int | None, reason: str) -> None:
        """Give up ``step`` (held under ``adoption``; None or -1: we claimed it) without waiting for the lease
        to lapse: observers adopt it at their next listing of heartbeats (within a quarter lease). Never
        raises: a note that could not be written leaves the step to its lease, as a killed worker's."""
        index = -1 if adoption is None else adoption
        try:
            self.store.put_json(release_key(step, index), {"step": step, "adoption": index, "reason": reason,
                                                           **self.me.fields(), "created_at": time.time()})
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("could not give up step %d: %s", step, exc)

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
