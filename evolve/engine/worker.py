"""The worker loop. Ray wraps this same class; tests and a GPU box without Ray run it in-process."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from evolve.config import RunConfig
from evolve.engine.breeder import Breeder, make_breeder
from evolve.engine.child import Child
from evolve.engine.collector import Collector, drop_strays
from evolve.engine.heartbeat import Heartbeats
from evolve.engine.liveness import Identity
from evolve.engine.population import Population
from evolve.seeding import derive_seed
from evolve.store.backend import Store
from evolve.store.keys import individual_key, weights_key
from evolve.training.evaluate import Evaluator, make_evaluator
from evolve.training.outcome import Outcome
from genomes import Mutation, SearchSpace, genome_from_json

log = logging.getLogger("evolve.engine.worker")

GC_GRACE_SECONDS = 2.0  # a worker reads its parent's weights within moments of choosing it (from a fresh view)
WAIT_SECONDS = 0.05  # between two tries to breed a step that waits for enough live individuals


@dataclass
class _Trained:
    """A trained child on its way to the store."""

    step: int
    adopted: bool
    record: dict[str, Any]
    weights: bytes | None
    started: float  # perf_counter at the step's start
    selected: float  # when its child was bred (and the previous child handed to the writer)
    trained: float  # and when training ended


def _mutation(provenance: dict[str, Any]) -> Mutation | None:
    return Mutation.from_json(provenance["mutation"]) if provenance.get("mutation") else None


def _run_all(jobs: list[Callable[[], None]]) -> None:
    for job in jobs:
        job()


def _backoff(idle: float, refresh_seconds: float) -> float:
    """How long a worker with no step to start waits before it looks again (each look lists the log):
    50 ms, doubling while nothing is free, up to ``refresh_seconds``. At a run's end every worker
    but the last few has nothing to do; polling at a fixed 5 per second they listed the log more
    often than the working ones did."""
    return min(max(0.01, refresh_seconds), 0.05 if idle == 0 else 2 * idle)


class StepAbandoned(Exception):
    """A step given up before its loser was killed; it stays claimed and is adopted later."""


@dataclass
class WorkerStats:
    worker: str
    steps: int = 0
    adopted: int = 0
    lost: int = 0
    failed: int = 0
    busy_seconds: float = 0.0
    steps_done: list[int] = field(default_factory=list)


class Worker:
    """One evolution worker (Real et al. 2017, Algorithm 1, made crash-safe).

    Pseudocode::

        while some step 0..N+T-1 has no child:
            s = adopt a step whose lease lapsed, else claim the next free step
            if s < N:                                  # the initial population
                child = initial genome from seed(run, s)
            else:
                parent, loser = tournament on a random pair (or aging sample)
                kill loser (create-once tombstone; if someone beat us, choose again)
                child, mutation = mutate(parent.genome, rng(run, s))
            fitness = train(child, inherit parent's weights)     # heartbeat meanwhile; gcnn: from scratch
            write weights, then the child (create-once: a late zombie loses here)
    """

    def __init__(self, store: Store, config: RunConfig, space: SearchSpace, worker_id: str | None = None,
                 evaluator: Evaluator | None = None, slot: str | None = None, actor: str | None = None,
                 rank: int | None = None) -> None:
        """``slot``: the worker's place in its run (``ray-3``), ``actor``: its Ray actor id. A later
        incarnation of the same actor, or a later worker in the same slot on the same machine once this
        one's process is gone, takes over this one's steps at once (:mod:`evolve.engine.liveness`). ``rank``:
        its index among the run's ``config.workers`` (3 for ``ray-3``): where it claims first."""
        self.store = store
        self.config = config
        self.space = space
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.identity = Identity.here(self.id, slot, actor)
        self.population = Population(store, config.population, config.population + config.steps, self.identity,
                                     config.lease_seconds, config.refresh_seconds, config.workers, rank)
        self.breeder: Breeder = make_breeder(config, space, self.population, self.id)
        self._evaluator = evaluator
        self.stop_event = threading.Event()
        self.heartbeats = Heartbeats(self.population, store, config.lease_seconds, f"evolve-heartbeats-{self.id}")
        self.stats = WorkerStats(worker=self.id)
        self._orphans: list[int] = []
        self._pool: ThreadPoolExecutor | None = None
        self._held: tuple[_Trained, Callable[[], None]] | None = None  # a trained child not yet handed over
        self._later: list[Callable[[], None]] = []  # store work put off till the next training (marks, deletions)
        self._writing: tuple[_Trained, Future] | None = None  # the child the writer thread is writing
        self.collector = None
        if config.keep == "needed" and self.breeder.collects:
            grace = max(GC_GRACE_SECONDS, 2 * config.refresh_seconds)
            self.collector = Collector(store, self.population, config.keep_best, grace)

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = make_evaluator(self.config, self.space)
        return self._evaluator

    def run(self) -> WorkerStats:
        log.info("worker %s started (pid %d on %s)", self.id, os.getpid(), socket.gethostname())
        pop = self.population
        pop.refresh(force=True)
        self._orphans = pop.orphans()
        idle = 0.0
        overlap = getattr(self.evaluator, "overlaps_writes", True)
        with self.pipelined() if overlap else contextlib.nullcontext():
            while not self.stop_event.is_set():
                step, adoption = self._next_step()  # a claim refreshes a view older than refresh_seconds
                if step is None:
                    self.flush()
                    if pop.finished():
                        self._collect(finished=True)
                        break
                    idle = _backoff(idle, self.config.refresh_seconds)
                    time.sleep(idle)
                    continue
                idle = 0.0
                if self.stop_event.is_set():  # stopped while claiming: given up, not left to a lease
                    self.population.release(step, adoption, "stopped as it was claimed")
                    break
                try:
                    self.run_step(step, adoption=adoption, background=overlap)
                except StepAbandoned as why:
                    log.info("step %d left in flight: %s", step, why)
                    self.population.release(step, adoption, str(why))
                    break
        log.info("worker %s finished: %d steps", self.id, self.stats.steps)
        return self.stats

    @contextlib.contextmanager
    def pipelined(self) -> Iterator[None]:
        """Steps run with ``background=True`` inside: log marks and children go through the writer
        thread; on the way out the last child is written and the thread stopped.

        On a local disk the claim and kill marks wait till the step's tombstone is written (a file
        created meanwhile would lengthen its fsync); on an object store they go to the writer at
        once, so that other workers see the claim a round trip after it, not after the step's reads
        (with 32 workers on a busy server, late claim marks tripled the colliding claims)."""
        self.population.defer_marks(self._later.append if self.store.local else self._now)
        if self.collector is not None:
            self.collector.later = self._later.append
        try:
            yield
        finally:
            try:
                self.flush()
            finally:
                self.population.defer_marks(None)
                if self.collector is not None:
                    self.collector.later = None
                if self._pool is not None:
                    self._pool.shutdown()
                    self._pool = None

    def stop(self) -> None:
        """Finish the step in hand and return (the run stays resumable)."""
        self.stop_event.set()

    def release(self, reason: str) -> list[int]:
        """Give up every step held now, for a worker that will not finish them (its process is going away,
        its grace spent): others adopt them at once rather than after the lease. The steps given up."""
        self.stop_event.set()
        return self.heartbeats.release_all(reason)

    def _collect(self, finished: bool = False) -> None:
        """Delete the weights this worker's kills made garbage (never fatal: at worst they stay)."""
        if self.collector is None:
            return
        try:
            self.collector.collect(finished)
        except Exception as exc:  # noqa: BLE001 - a missed deletion only costs storage
            log.warning("garbage collection failed: %s", exc)

    def _next_step(self) -> tuple[int | None, int | None]:
        """(step, the adoption we hold it under or None): a dead predecessor's step, a lapsed one, or a fresh claim."""
        pop = self.population
        while self._orphans:
            step = self._orphans.pop(0)
            adoption = pop.adopt_orphan(step)
            if adoption is not None:
                return step, adoption
        for step in pop.lapsed():
            adoption = pop.adopt(step)
            if adoption is not None:
                return step, adoption
        return pop.claim_next(self.breeder.claim_chooser, self.breeder.waits_for), None

    def _finish_lapsed(self) -> None:
        """While our step waits for enough live individuals, finish the lapsed steps that hold them dead
        (with nobody else left to adopt them, a worker that only waited would wait forever).

        Told to stop meanwhile, the worker abandons its step (claimed, nothing killed yet): a later
        run adopts it. Waiting on would hang a Ctrl-C until some other process finished those steps.
        """
        pop = self.population
        self.flush()  # our own last child may be one of those the step waits for
        for step in pop.lapsed():
            if self.stop_event.is_set():
                break
            adoption = pop.adopt(step)
            if adoption is not None:
                self.run_step(step, adoption=adoption)
        if self.stop_event.is_set():
            raise StepAbandoned("stopped while waiting for enough live individuals")

    def run_step(self, step: int, adopted: bool = False, adoption: int | None = None,
                 background: bool = False) -> bool | None:
        """One step, top to bottom: breed step's child (the breeder selects a parent, kills the loser and
        mutates; ``evolve.engine.breeder``), train it from its parent's weights, write it create-once. Held
        under ``adoption`` (its index) or as claimed; True if our child is the one recorded.

        With ``background`` the child is held and None returned at once: the next step hands it to the
        writer thread once its own claim and tombstone are written, so that training hides the write
        (:meth:`flush` writes it now). The step's heartbeat (``evolve.engine.heartbeat``) beats till then.
        """
        adopted = adopted or adoption is not None
        if adopted and self.population.child_exists(step):  # its holder died after writing the child
            return False
        beat = self.heartbeats.start(step, adoption, at_once=adopted)
        started = time.perf_counter()

        def done() -> None:
            beat.stop()
            self.stats.busy_seconds += time.perf_counter() - started

        try:
            seed = derive_seed(self.config.seed, step)
            child, parent_weights = self._breed(step, adopted)
            self._start_write()  # the previous child's, now that this step's claim and tombstone are written
            selected = time.perf_counter()
            outcome = self.evaluator.evaluate(child.genome, parent_weights, seed, _mutation(child.provenance))
            evaluated = time.perf_counter()
            record = self._record(step, seed, adopted, child, outcome)
            trained = _Trained(step, adopted, record, outcome.weights, started, selected, evaluated)
        except BaseException:
            done()
            raise
        if background:
            self.flush()  # the previous step's write: long done, unless training is faster than the disk
            self._held = (trained, done)
            return None
        try:
            won = self._write(trained)
        finally:
            done()
        self._settle(trained, won)
        self._collect()
        return won

    def _start_write(self) -> None:
        """Hand the held child, and the log marks and deletions put off till now, to the writer thread:
        called once the next step's claim and tombstone are written, so that this store work contends
        with its training, not with those (on a local disk every file created or deleted makes the
        next fsync longer)."""
        self._collect()  # what our kills made garbage: deleted with the rest
        later, self._later[:] = list(self._later), []
        if self._held is not None:
            trained, done = self._held
            self._held = None
            self._writing = (trained, self._writer().submit(self._write_then, trained, done, later))
        elif later:
            self._writer().submit(_run_all, later)

    def flush(self) -> bool | None:
        """Write the child held back or being written, if any; True if it is the one recorded."""
        self._start_write()
        if self._writing is None:
            return None
        trained, future = self._writing
        self._writing = None
        return self._settle(trained, future.result())

    def _now(self, job: Callable[[], None]) -> None:
        self._writer().submit(job)

    def _writer(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"evolve-writer-{self.id}")
        return self._pool

    def _write_then(self, trained: _Trained, done, later: list[Callable[[], None]]) -> bool:
        _run_all(later)
        try:
            return self._write(trained)
        finally:
            done()

    def _breed(self, step: int, adopted: bool) -> tuple[Child, bytes | None]:
        """Step's child from the breeder, and the weights it starts from. While too few are alive to
        select from, finish the lapsed steps that hold them and ask again."""
        while (child := self.breeder.child(step)) is None:
            self._finish_lapsed()
            time.sleep(WAIT_SECONDS)
        parent_weights = self.breeder.inherited(child.provenance, child.parent, self._read_weights)
        if self.collector is not None and child.parent is not None and not adopted:
            # how old the view that chose the parent was when its weights were read (an adopter may
            # replay a selection made long ago, from a view refreshed before its last training)
            view = self.population.view
            self.collector.observe(time.monotonic() - view.refreshed_at + self.population.last_refresh_s)
        return child, parent_weights

    def _record(self, step: int, seed: int, adopted: bool, child: Child, outcome: Outcome) -> dict[str, Any]:
        """The child's record, all but what writing it adds (weights, created_at, write timings)."""
        genome_hash = child.genome.content_hash()
        fitness, extra = self.breeder.fitness(step, genome_hash, outcome)
        return {**child.provenance, "step": step, "seed": seed, "worker": self.id, "adopted": adopted, **extra,
                "genome": child.genome.to_json(), "hash": genome_hash, "fitness": fitness,
                "raw_fitness": outcome.fitness, "status": outcome.status, "reason": outcome.reason,
                "val_accuracy": outcome.val_accuracy, "test_accuracy": outcome.test_accuracy,
                "metrics": outcome.metrics(), "weights": None}

    def replay(self, step: int) -> Outcome:
        """Train recorded ``step`` again: its genome, seed and mutation, its parents' weights as stored.

        With torch on one thread the weights come out byte for byte as recorded, whichever executor
        ran the step and whatever else this process trains meanwhile (tests/test_reproducible.py).
        """
        record = self.population.individual(step)
        parents = record.get("parents") or []
        weights = self.breeder.inherited(record, parents[0] if parents else None, self._read_weights)
        return self.evaluator.evaluate(genome_from_json(record["genome"]), weights, int(record["seed"]),
                                       _mutation(record))

    def _write(self, t: _Trained) -> bool:
        """Store work only (the writer thread runs it): the weights, then the child (create-once), then
        its log mark. True if our child is the one recorded; a losing trainer's weights are deleted."""
        record = t.record
        if t.weights is not None:
            key = weights_key(t.step, uuid.uuid4().hex[:12])
            self.store.create_blob(key, t.weights)
            record["weights"] = {"key": key, "sha256": hashlib.sha256(t.weights).hexdigest(), "bytes": len(t.weights)}
        now = time.perf_counter()
        record["created_at"] = time.time()
        record["timings"] = {"select_s": t.selected - t.started, "evaluate_s": t.trained - t.selected,
                             "write_s": now - t.trained, "total_s": now - t.started}
        won = self.store.create_json(individual_key(t.step), record)
        if won:
            self.population.publish_child(t.step, record)
            if t.adopted and self.collector is not None:  # what the step's earlier holders wrote
                drop_strays(self.store, t.step, record["weights"]["key"] if record["weights"] else None)
        elif record["weights"] is not None:
            self.store.delete(record["weights"]["key"])
        return won

    def _settle(self, t: _Trained, won: bool) -> bool:
        """Back on the worker's thread: count the step and tell the view."""
        if won:
            self.stats.steps += 1
            self.stats.steps_done.append(t.step)
            self.stats.adopted += int(t.adopted)
            self.stats.failed += int(t.record["status"] != "ok")
            self.population.learn_child(t.step, t.record)
        else:
            self.stats.lost += 1
            self.population.child_exists(t.step)
        return won

    def _read_weights(self, step: int) -> bytes | None:
        """Individual ``step``'s stored weights, checked against their hash (None: train from scratch)."""
        parent = self.population.individual(step)
        info = parent.get("weights")
        if not info or not self.config.train.inherit_weights:
            return None
        data = self.store.read_bytes(info["key"])
        if data is None or hashlib.sha256(data).hexdigest() != info["sha256"]:
            log.warning("weights of individual %s missing or corrupt; training from scratch", parent.get("step"))
            return None
        return data
