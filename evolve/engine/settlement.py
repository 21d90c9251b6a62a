"""Selection and death, exactly once per step: which (parent, loser) a step uses, and the loser's tombstone.

    claims/<s>              usually carries attempt 0's (parent, loser)
    selections/<s>-<k>      attempt k's (parent, loser) when the claim carries none; the
                            first whose tombstone names step s and attempt k is the step's
                            selection
    deaths/<loser>          the tombstone: killed at step s, attempt k

Every one is create-once, so the claimant, a zombie that woke up late and any adopter can replay
a step and converge on the same selection and the same death. An attempt whose loser is already
dead (killed by another step) is followed by the next attempt.

:class:`Settlement` holds these methods of :class:`~evolve.engine.population.Population`; they
work on its view (``refresh``, ``live``, ``_mark``, ``view.deaths``) and on the claims a worker
has just made (``_fresh_claims``, set by :meth:`~evolve.engine.claims.Claims.claim`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from evolve.engine.selection import Choice
from evolve.store.backend import Store
from evolve.store.keys import death_key, kill_mark, selection_key
from evolve.store.marks import read_selection

Reader = Callable[[Store, int, int], "dict[str, Any] | None"]  # (store, step, attempt) -> attempt's record


def read_key(store: Store, step: int, attempt: int) -> dict[str, Any] | None:
    """Attempt ``attempt``'s record in ``selections/`` only: for a step whose claim carries none."""
    return store.read_json(selection_key(step, attempt))


class Settlement:
    """Selection and death: the part of :class:`~evolve.engine.population.Population` that settles a
    step's (parent, loser) and kills the loser."""

    def _init_settlement(self) -> None:
        self.killed: list[int] = []  # individuals whose tombstone we wrote, not yet handed to the collector
        # settling, too few live -> (the attempt to go on from, how its records are read)
        self._waiting: dict[int, tuple[int, Reader]] = {}

    def settle_selection(self, step: int, choose) -> tuple[Choice, int] | None:
        """The step's (parent, loser) and attempt number, killing the loser exactly once; or None
        while too few are live to choose (call again: it goes on where it stopped).

        ``choose(live, attempt)`` proposes a pair when attempt k has no record yet, or None when
        too few are live. The live count comes back only as steps in flight finish, and some of
        those may need adopting first: the caller does that between two calls (a worker that only
        waited would wait forever with nobody else left to adopt them).

        Four cases; each differs only in how it finds an attempt's record before proposing one
        (every proposal is created once in ``selections/<s>-<k>``, or read back when refused; every
        loser gets a create-once tombstone in ``deaths/``):

        =====================================  ==============  =============================================
        case                                   first attempt   an attempt's record is
        =====================================  ==============  =============================================
        :meth:`_settle_carried`: a fresh       0               attempt 0: the claim's (no read); later: none
        claim of ours carrying attempt 0                       while our creates win (no read), then read
                                                               with ``read_selection``
        :meth:`_settle_bare`: a fresh claim    0               none while our creates win (no read), then
        of ours carrying no selection                          read from ``selections/`` only (never the claim)
        :meth:`_settle_resumed`: a call that   where it        read as the case it resumes reads, after a
        found too few live                     stopped         forced refresh
        :meth:`_settle_adopted`: a step we     0               read with ``read_selection`` (attempt 0: the
        adopted, or a replay                                   claim, then ``selections/``)
        =====================================  ==============  =============================================

        Replaying a step reads the records already written and continues where they stop; a step
        we have just claimed has none to read (should one appear anyway, its create-once wins).
        """
        if step in self._waiting:
            attempt, read = self._waiting.pop(step)
            return self._settle_resumed(step, choose, attempt, read)
        if step not in self._fresh_claims:
            return self._settle_adopted(step, choose)
        carried = self._fresh_claims.pop(step)
        if carried is None:
            return self._settle_bare(step, choose)
        return self._settle_carried(step, choose, carried)

    def _settle_carried(self, step: int, choose, carried: dict[str, Any]) -> tuple[Choice, int] | None:
        """A fresh claim of ours whose claim carries attempt 0's selection ``carried``.

        Reads nothing for attempt 0 (the claim is ours) and kills its loser. Should that loser be
        dead already, only an adopter of our step could have written the next attempts: each is
        created first and read only when refused; after a refusal they are read
        (``read_selection``) before proposing.
        """
        choice = _choice(carried)
        if self.kill(choice.loser, step, 0, choice.parent):
            return choice, 0
        return self._attempts(step, choose, 1, ours=True, read=read_selection)

    def _settle_bare(self, step: int, choose) -> tuple[Choice, int] | None:
        """A fresh claim of ours that carries no selection (too few were live when it was made).

        Never reads the claim back. Attempts are proposed and created without a read while our
        creates win (only an adopter of our step writes its selections); after a refusal they are
        read from ``selections/`` before proposing.
        """
        return self._attempts(step, choose, 0, ours=True, read=read_key)

    def _settle_resumed(self, step: int, choose, attempt: int, read: Reader) -> tuple[Choice, int] | None:
        """A call that found too few live members at ``attempt``: refresh the view, then go on from
        that attempt, reading each attempt's record (as the case that stopped reads them) before
        proposing one: while we waited, an adopter may have written it."""
        self.refresh(force=True)
        return self._attempts(step, choose, attempt, ours=False, read=read)

    def _settle_adopted(self, step: int, choose) -> tuple[Choice, int] | None:
        """A step we did not just claim (adopted, or replayed after a restart): read every attempt's
        record (attempt 0: in the claim, else in ``selections/``) before proposing one."""
        return self._attempts(step, choose, 0, ours=False, read=read_selection)

    def _attempts(self, step: int, choose, attempt: int, ours: bool, read: Reader) -> tuple[Choice, int] | None:
        """Attempts ``attempt``, ``attempt + 1``, ... until one's loser dies at this step.

        ``ours``: nobody else has written these attempts' records (no read; it stays so while our
        creates win). Otherwise ``read`` finds an attempt's record; with none, one is proposed and
        created (a refused create reads the winner's). Too few live to propose: remember where
        we stopped (see :meth:`_settle_resumed`) and return None.
        """
        while True:
            record = None if ours else read(self.store, step, attempt)
            if record is None:
                self.refresh(force=attempt > 0)
                choice = self._propose(step, attempt, choose)
                if choice is None:
                    self._waiting[step] = (attempt, read)
                    return None
                mine = self._selection(step, attempt, choice)
                won, theirs = self.store.create_or_read_json(selection_key(step, attempt), mine)
                ours = ours and won
                record = mine if won else theirs
            choice = _choice(record)
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

    def _propose(self, step: int, attempt: int, choose) -> Choice | None:
        # claims land out of order: prefer parents and losers from earlier steps, as in a serial run
        return choose(self.live(before=step), attempt) or choose(self.live(), attempt)

    def _selection(self, step: int, attempt: int, choice: Choice) -> dict[str, Any]:
        return {"step": step, "attempt": attempt, "parent": choice.parent, "loser": choice.loser,
                "worker": self.worker}


def _choice(record: dict[str, Any]) -> Choice:
    parent = record.get("parent")
    return Choice(parent=None if parent is None else int(parent), loser=int(record["loser"]))
