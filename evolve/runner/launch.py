"""Start or resume a run: open the store, write or check run.json, launch workers, watch progress.

The launcher (named so that ``evolve.run`` is the API's function, ``evolve.api.run``)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
from dataclasses import asdict
from typing import Any, Callable

import fsspec

from evolve.config import ConfigError, RunConfig, build_config, check_resume, is_table, merge_settings
from evolve.engine.worker import Worker
from evolve.runner import stopping
from evolve.runner.logsetup import LineBuffer, emit
from evolve.runner.record import load_run, space_for, total_steps
from evolve.runner.stopping import GRACE_SECONDS
from evolve.store.backend import Store, StoreError
from evolve.store.doctor import require_healthy
from evolve.store.keys import PAD, RUN_KEY, claim_key, extension_key, release_of, step_of
from evolve.store.marks import backfill_log
from evolve.store.records import SCHEMA
from evolve.store.repair import refusal
from evolve.store.snapshot import Snapshot
from evolve.training.files import DataError
from evolve.training.tabular import table_of
from evolve.training.threads import torch_threads
from genomes import GenomeError, SearchSpace
from genomes.hparams import hparams_json

USER_ERRORS = (ConfigError, DataError, GenomeError, StoreError)
"""What a user can cause (a bad config, dataset or store): one line under any executor, never a traceback."""


def open_run(config: RunConfig, resume: bool = False, overrides: dict[str, Any] | None = None,
             check_health: bool = True) -> tuple[Store, RunConfig, SearchSpace]:
    """Open (or create) the run at ``config.store``; a resume keeps the stored config.

    ``overrides`` are the settings the user gave explicitly: on resume they may change only
    the resumable fields (workers, steps, address, ...); anything else conflicting is refused.
    """
    new_folder = None if resume else _missing_local_folder(config.store)
    try:
        return _open_run(config, resume, overrides, check_health)
    except BaseException:
        if new_folder is not None:  # refused before run.json: leave nothing behind
            _remove_created_folders(config.store, new_folder)
        raise


def _open_run(config: RunConfig, resume: bool, overrides: dict[str, Any] | None,
              check_health: bool) -> tuple[Store, RunConfig, SearchSpace]:
    store = Store.open(config.store, config.storage_options, create=not resume)
    if check_health:
        require_healthy(store)
    record = store.read_json(RUN_KEY)
    if record is not None:
        stored, space = load_run(store)
        given = {**(overrides or {}), "store": config.store, "storage_options": config.storage_options}
        merged = build_config(merge_settings(stored.model_dump(), given), "resume")
        check_resume(stored, merged)
        if unreadable := Snapshot.read(store).unreadable:  # its step would count as done, and nothing read it
            raise StoreError(refusal(store.url, unreadable))
        if merged.steps < stored.steps:
            raise ConfigError(f"steps: the run at {store.url} has {stored.steps} steps and can only be "
                              f"extended (got {merged.steps})")
        if merged.steps > stored.steps:
            store.create_json(extension_key(merged.steps), {"steps": merged.steps, "created_at": time.time()})
        if is_table(merged.fitness):  # refused here, before any worker starts, if it moved or changed
            table_of(merged)
        backfill_log(store)
        return store, merged, space
    if resume:
        raise StoreError(f"no evolve run at {store.url!r} to resume (run.json missing)")
    space = space_for(config)
    # storage_options hold credentials (key, secret, token): never written into the store itself
    run_record = {"schema": SCHEMA, "config": config.model_dump(exclude={"storage_options"}),
                  "created_at": time.time(),
                  "space": {"input_shape": list(space.input_shape), "num_classes": space.num_classes,
                            "max_params": space.max_params, "max_flops": space.max_flops,
                            "options": dict(space.options),
                            **({"hparams": hparams_json(space.hparams)} if space.hparams else {})}}
    if not store.create_json(RUN_KEY, run_record):
        return _open_run(config, True, overrides, False)
    return store, config, space


def _local_root(url: str) -> str | None:
    protocol, path = fsspec.core.split_protocol(url)
    if protocol not in (None, "file", "local") or "::" in url:
        return None
    return os.path.abspath(os.path.expanduser(path))


def _missing_local_folder(url: str) -> str | None:
    """The outermost folder that opening a local store at ``url`` would create, or None."""
    path = _local_root(url)
    top = None
    while path is not None and not os.path.exists(path) and os.path.dirname(path) != path:
        top, path = path, os.path.dirname(path)
    return top


def _remove_created_folders(url: str, top: str) -> None:
    """Remove the store's folder and those above it up to ``top``, each only if empty, and nothing if
    a run.json appeared meanwhile (another ``evolve run`` on the same new path won the race)."""
    root = _local_root(url)
    if root is None or os.path.exists(os.path.join(root, RUN_KEY)):
        return
    folder = root
    while True:
        try:
            os.rmdir(folder)
        except OSError:
            return
        if folder == top:
            return
        folder = os.path.dirname(folder)


def count_individuals(store: Store) -> int:
    return len(store.list_keys("individuals/"))


def run_in_process(store: Store, config: RunConfig, space: SearchSpace,
                   on_progress: Callable[[int], None] | None = None,
                   stop: threading.Event | None = None, evaluator: Any = None,
                   grace: float = GRACE_SECONDS, joined: bool = False) -> list[dict[str, Any]]:
    """Run ``config.workers`` workers as threads of this process (tests, debugging, a GPU box without Ray).

    Setting ``stop`` asks every worker to finish its step and return (the run stays resumable).
    ``evaluator``: shared by the workers instead of the one the config names (``evolve.training.fitness``:
    a function given in-process). Interrupted (Ctrl-C, SIGTERM, SIGHUP: ``evolve.runner.stopping``), the
    workers' steps may finish within ``grace`` seconds; those still training are given up, and
    ``Interrupted`` is raised. ``joined``: another driver runs the store too (``evolve.runner.drivers``): its
    workers hold the lanes, so these claim at random. torch runs on one thread per worker meanwhile
    (``evolve.training.threads``)."""
    trains = config.fitness not in ("synthetic",) and not is_table(config.fitness)
    with torch_threads(1) if trains else contextlib.nullcontext():
        return _run_threads(store, config, space, on_progress, stop, evaluator, grace, joined)


def _run_threads(store: Store, config: RunConfig, space: SearchSpace, on_progress: Callable[[int], None] | None,
                 stop: threading.Event | None, evaluator: Any, grace: float, joined: bool) -> list[dict[str, Any]]:
    workers = [Worker(store, config, space, worker_id=f"local-{i}-{os.getpid()}", slot=f"local-{i}",
                      evaluator=evaluator, rank=None if joined else i) for i in range(config.workers)]
    results: list[dict[str, Any]] = [{} for _ in workers]
    errors: list[BaseException] = []

    # Wait on events, never on Thread.join: on CPython 3.11 a Ctrl-C that interrupts join() can mark
    # a still-running thread as stopped (the bpo-45274 clean-up releases its tstate lock), so a later
    # join() returns at once and the process exits under a worker that is midway through a step.
    done = [threading.Event() for _ in workers]

    def target(i: int) -> None:
        try:
            results[i] = asdict(workers[i].run())
        except BaseException as exc:  # surfaced to the caller below
            errors.append(exc)
            for w in workers:
                w.stop()
        finally:
            done[i].set()

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(len(workers))]
    for t in threads:
        t.start()
    try:
        while not all(d.is_set() for d in done):
            next(d for d in done if not d.is_set()).wait(0.2 if stop is not None else 0.5)
            if stop is not None and stop.is_set():
                for w in workers:
                    w.stop()
            if on_progress:
                on_progress(count_individuals(store))
    except KeyboardInterrupt:
        for w in workers:
            w.stop()
        deadline = time.monotonic() + grace
        with contextlib.suppress(KeyboardInterrupt):  # a second signal: give up the steps at once
            for d in done:
                d.wait(max(0.0, deadline - time.monotonic()))
        reason = f"stopped by {signal_name(stopping.received())}, grace spent"
        released = [s for w, d in zip(workers, done) if not d.is_set() for s in w.release(reason)]
        raise _interrupted(store, config, released, grace) from None
    if errors:
        raise errors[0]
    return results


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _interrupted(store: Store, config: RunConfig, released: list[int], grace: float) -> stopping.Interrupted:
    return stopping.Interrupted(store.url, min(count_individuals(store), total_steps(config)), total_steps(config),
                                sorted(released), stopping.received(), grace)


class WorkerActor:
    """What Ray runs: the plain Worker behind a handle that can also be told to stop."""

    def __init__(self, store: Store, config: RunConfig, space: SearchSpace, name: str,
                 log_level: int = logging.WARNING, rank: int | None = None, grace: float = GRACE_SECONDS) -> None:
        import ray

        actor = ray.get_runtime_context().get_actor_id()
        worker_id = f"{name}-{os.getpid()}"
        self.lines = LineBuffer.install(log_level, worker_id)
        self.worker = Worker(store, config, space, worker_id=worker_id, slot=name, actor=actor, rank=rank)
        self.grace, self.finished = grace, threading.Event()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._terminated)

    def _terminated(self, signum: int, frame: Any) -> None:
        """SIGTERM (the node is going away): the step in hand may finish within the grace, else it is
        given up so that others adopt it at once; then the process ends, and Ray restarts the actor
        (elsewhere, if the node went)."""
        self.worker.stop()
        if not self.finished.wait(self.grace):
            self.worker.release(f"its worker process got {signal_name(signum)}, grace spent")
        os._exit(128 + signum)

    def run(self) -> dict[str, Any]:
        try:
            return asdict(self.worker.run())
        finally:
            self.finished.set()

    def release(self, reason: str) -> list[int]:
        """Give up the steps held now (the driver stops the run and the grace is spent)."""
        return self.worker.release(reason)

    def logs(self) -> list[dict[str, Any]]:
        """The log lines kept since the last call (the driver logs them as its own)."""
        return self.lines.take()

    def stop(self) -> None:
        self.worker.stop()


LOG_POLL_SECONDS = 2.0


class _ActorLogs:
    """Collects the actors' log lines: one ``logs`` call per actor at a time, asked again once answered."""

    def __init__(self, ray: Any, actors: list[Any]) -> None:
        self.ray, self.actors = ray, actors
        self.asked: dict[int, Any] = {}

    def collect(self, wait: float = 0.0) -> None:
        for i, actor in enumerate(self.actors):
            if i not in self.asked:
                self.asked[i] = actor.logs.remote()
        refs = list(self.asked.values())
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=wait)
        for i, ref in list(self.asked.items()):
            if ref in ready:
                del self.asked[i]
                try:
                    emit(self.ray.get(ref))
                except self.ray.exceptions.RayError:  # the actor died meanwhile: its restart keeps logging
                    pass


def _abandon(ray: Any, actors: list[Any], pending: list[Any]) -> None:
    """After one actor failed: end the others (the run stays resumable: their steps are adopted on
    resume) and collect what they return, so Ray prints no second traceback for an error nobody read."""
    for a in actors:
        ray.kill(a, no_restart=True)
    for ref in pending:
        try:
            ray.get(ref, timeout=30)
        except Exception:  # noqa: BLE001 - killed, or the same error again: reported once already
            pass


def _stop_actors(ray: Any, store: Store, config: RunConfig, actors: list[Any], pending: list[Any],
                 runs: dict[Any, Any], grace: float, logs: _ActorLogs) -> stopping.Interrupted:
    """The run was interrupted: every actor is asked to stop; those whose ``run`` has not returned after
    ``grace`` give up their steps; then all are ended (no restart)."""
    with contextlib.suppress(KeyboardInterrupt):  # a second signal: give up the steps at once
        for a in actors:
            a.stop.remote()
        deadline = time.monotonic() + grace
        while pending and (left := deadline - time.monotonic()) > 0:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=min(left, 0.5))
    reason = f"stopped by {signal_name(stopping.received())}, grace spent"
    released: list[int] = []
    asked = [runs[r].release.remote(reason) for r in pending]
    ready, _ = ray.wait(asked, num_returns=len(asked), timeout=10) if asked else ([], [])
    for ref in ready:  # all at once: a job manager's SIGKILL follows SIGTERM within seconds
        try:
            released += ray.get(ref)
        except Exception:  # noqa: BLE001 - an actor that died meanwhile: its restart or the lease takes it
            pass
    with contextlib.suppress(Exception):
        logs.collect(wait=2.0)
    for a in actors:
        with contextlib.suppress(Exception):
            ray.kill(a, no_restart=True)
    return _interrupted(store, config, released, grace)


WORKER_DIED = "A worker died or was killed"
RETRIED = "There are infinite retries remaining"  # Ray's note that a dead actor's run is retried on its restart
log = logging.getLogger("evolve.runner.launch")


class _LostWorkers:
    """Ray's note on a worker process that died, as one line of evolve's own.

    Ray guesses at the cause ("the process was killed by the OOM killer", 15 lines over 8 SIGKILLs),
    which sends a user looking for a memory problem that is not there. The line says what the store
    knows: the worker, whether it gave its step up (SIGTERM) or died holding it, and the step that
    will be taken over. Ray's own text goes to the log file only (``--log-file``).
    """

    def __init__(self, store: Store, printer: Callable[..., Any]) -> None:
        self.store, self.printer = store, printer

    def __call__(self, data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        lines = [str(line) for line in data.get("lines") or []]
        if data.get("pid") != "raylet" or not any(WORKER_DIED in line or RETRIED in line for line in lines):
            return self.printer(data, *args, **kwargs)
        for line in lines:
            _to_log_files(line)
            match = re.search(r"Worker PID: (\d+)", line) if WORKER_DIED in line else None
            if match:
                log.warning(self.describe(int(match.group(1))))
        return None

    def describe(self, pid: int) -> str:
        """The line for worker process ``pid``: what the store's records of the steps in flight say of it."""
        held, released, slot = [], [], None
        try:
            for key in self.store.list_keys("heartbeats/"):
                if (gave_up := release_of(key)) is not None:
                    record = self.store.read_json(key) or {}
                    if record.get("pid") == pid:
                        slot, released = record.get("slot") or slot, [*released, gave_up[0]]
            done = {step_of(k) for k in self.store.list_keys("individuals/")}
            for step in sorted({step_of(k) for k in self.store.list_keys("claims/")} - done - set(released)):
                adoptions = self.store.list_keys(f"adoptions/{step:0{PAD}d}-")
                holder = self.store.read_json(adoptions[-1] if adoptions else claim_key(step)) or {}
                if holder.get("pid") == pid:
                    slot, held = holder.get("slot") or slot, [*held, step]
        except Exception:  # noqa: BLE001 - the line is said without the steps
            pass
        who = f"worker {slot} (pid {pid})" if slot else f"worker process {pid}"
        if released and not held:
            return f"{who} got SIGTERM and gave up step {_steps(released)}: taken over at once; Ray restarts the worker"
        if not held:
            return f"{who} ended holding no step (Ray restarts it): nothing to take over"
        return (f"{who} died holding step {_steps(held)} (killed or crashed: Ray does not say which); it will be "
                "taken over by the worker's restart, or by another worker once its lease lapses")


def _steps(steps: list[int]) -> str:
    return ", ".join(map(str, sorted(steps)))


def _to_log_files(text: str) -> None:
    """``text`` in the ``--log-file`` only (not on the terminal), at any log level."""
    record = logging.LogRecord("ray", logging.WARNING, __file__, 0, "%s", (text,), None)
    for handler in logging.getLogger("evolve").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _report_lost_workers(ray: Any, store: Store) -> None:
    """From now on in this process, Ray's notes on dead workers of the run at ``store`` become
    ``_LostWorkers`` lines (Ray's driver prints them through ``ray._private.worker.print_to_stdstream``,
    looked up at each note; its notes on actors ended at the run's end come after the run returns)."""
    module = getattr(getattr(ray, "_private", None), "worker", None)
    printer = getattr(module, "print_to_stdstream", None)
    if printer is None:  # another Ray: its notes show as they are
        return
    if isinstance(printer, _LostWorkers):
        printer.store = store
    else:
        module.print_to_stdstream = _LostWorkers(store, printer)


class _Notice(logging.Filter):
    """Drops one of Ray's start-up notices that a user cannot act on (the rest still show)."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


_NOTICES = {
    # a cluster it starts has token authentication on: its default, printed on every run (the warning
    # that authentication is *off* still shows)
    "ray._private.authentication.authentication_token_setup": "Token authentication is enabled",
    # a driver started off the main thread (evolve.run(..., wait=False)): Ctrl-C still reaches the run
    "ray._private.worker": "SIGTERM handler is not set because current thread is not the main thread",
}


def _quiet_ray_notices() -> None:
    for name, start in _NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Notice) and f.start == start for f in logger.filters):
            logger.addFilter(_Notice(start))


def init_ray(config: RunConfig) -> Any:
    """Ray, joined at ``config.address`` or started here with the run's CPUs; the ``ray`` module."""
    import ray

    if not ray.is_initialized():
        _quiet_ray_notices()
        ray.init(address=config.address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING,
                 **({} if config.address else {"num_cpus": max(config.workers * config.cpus_per_worker, 1)}))
    return ray


def run_on_ray(store: Store, config: RunConfig, space: SearchSpace,
               on_progress: Callable[[int], None] | None = None,
               stop: threading.Event | None = None, grace: float = GRACE_SECONDS,
               joined: bool = False) -> list[dict[str, Any]]:
    """Run the workers as Ray actors that restart when they die (they need nothing but the store).

    Setting ``stop`` asks every actor to finish its step and return (the run stays resumable).
    Interrupted (Ctrl-C, SIGTERM, SIGHUP), as ``run_in_process``: steps may finish within ``grace``;
    ``joined`` as there.
    The actors' log lines at the level the ``evolve`` logger has here are collected every
    ``LOG_POLL_SECONDS`` and logged here (``evolve.runner.logsetup``)."""
    ray = init_ray(config)
    stopping.reinstall()  # ray.init put its own SIGTERM handler in place (SIGABRT and a C++ dump)
    actor_cls = ray.remote(WorkerActor).options(
        num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker,
        max_restarts=-1, max_task_retries=-1, max_concurrency=2,
    )
    level = logging.getLogger("evolve").getEffectiveLevel()
    actors = [actor_cls.remote(store, config, space, f"ray-{i}", level, None if joined else i, grace)
              for i in range(config.workers)]
    pending = [a.run.remote() for a in actors]
    runs = dict(zip(pending, actors))
    _report_lost_workers(ray, store)
    return _watch(ray, store, config, actors, pending, runs, stop, on_progress, grace, _ActorLogs(ray, actors))


def _watch(ray: Any, store: Store, config: RunConfig, actors: list[Any], pending: list[Any], runs: dict[Any, Any],
           stop: threading.Event | None, on_progress: Callable[[int], None] | None, grace: float,
           logs: _ActorLogs) -> list[dict[str, Any]]:
    """Wait for the actors' runs, showing progress and their log lines."""
    results: list[dict[str, Any]] = []
    asked = False
    polled = time.monotonic()
    try:
        while pending:
            if stop is not None and stop.is_set() and not asked:
                asked = True
                for a in actors:
                    a.stop.remote()
            ready, pending = ray.wait(pending, timeout=0.2 if stop is not None else 1.0)
            results.extend(ray.get(ready))
            if time.monotonic() - polled >= LOG_POLL_SECONDS:
                logs.collect()
                polled = time.monotonic()
            if on_progress:
                on_progress(count_individuals(store))
    except KeyboardInterrupt:
        raise _stop_actors(ray, store, config, actors, pending, runs, grace, logs) from None
    except ray.exceptions.RayTaskError as exc:
        logs.collect(wait=5.0)  # what the actors logged before the error
        _abandon(ray, actors, pending)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, USER_ERRORS):  # the worker's own one-line error, not Ray's wrapped traceback
            raise cause from None
        raise
    for _ in range(2):  # what is still asked, then whatever the actors logged since
        logs.collect(wait=10.0)
    return results


__all__ = ["USER_ERRORS", "ConfigError", "open_run", "load_run", "run_in_process", "run_on_ray", "space_for",
           "total_steps"]
