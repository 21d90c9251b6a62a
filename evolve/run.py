"""Start or resume a run: open the store, write or check run.json, launch workers, watch progress."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict
from typing import Any, Callable

from evolve.config import SCHEMA_VERSION, ConfigError, RunConfig, build_config, check_resume, merge_settings
from evolve.doctor import require_healthy
from evolve.log import backfill_log
from evolve.keys import extension_key
from evolve.runfile import load_run, space_for, total_steps
from evolve.keys import RUN_KEY
from evolve.store import Store, StoreError
from evolve.worker import Worker
from genomes import SearchSpace


def open_run(config: RunConfig, resume: bool = False, overrides: dict[str, Any] | None = None,
             check_health: bool = True) -> tuple[Store, RunConfig, SearchSpace]:
    """Open (or create) the run at ``config.store``; a resume keeps the stored config.

    ``overrides`` are the settings the user gave explicitly: on resume they may change only
    the resumable fields (workers, steps, address, ...); anything else conflicting is refused.
    """
    store = Store.open(config.store, config.storage_options, create=not resume)
    if check_health:
        require_healthy(store)
    record = store.read_json(RUN_KEY)
    if record is not None:
        stored, space = load_run(store)
        given = {**(overrides or {}), "store": config.store, "storage_options": config.storage_options}
        merged = build_config(merge_settings(stored.model_dump(), given), "resume")
        check_resume(stored, merged)
        if merged.steps < stored.steps:
            raise ConfigError(f"steps: the run at {store.url} has {stored.steps} steps and can only be "
                              f"extended (got {merged.steps})")
        if merged.steps > stored.steps:
            store.create_json(extension_key(merged.steps), {"steps": merged.steps, "created_at": time.time()})
        backfill_log(store)
        return store, merged, space
    if resume:
        raise StoreError(f"no evolve run at {store.url!r} to resume (run.json missing)")
    space = space_for(config)
    # storage_options hold credentials (key, secret, token): never written into the store itself
    run_record = {"schema": SCHEMA_VERSION, "config": config.model_dump(exclude={"storage_options"}),
                  "created_at": time.time(),
                  "space": {"input_shape": list(space.input_shape), "num_classes": space.num_classes,
                            "max_params": space.max_params, "max_flops": space.max_flops,
                            "options": dict(space.options)}}
    if not store.create_json(RUN_KEY, run_record):
        return open_run(config, resume=True, overrides=overrides, check_health=False)
    return store, config, space


def count_individuals(store: Store) -> int:
    return len(store.list_keys("individuals/"))


def run_in_process(store: Store, config: RunConfig, space: SearchSpace,
                   on_progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Run ``config.workers`` workers as threads of this process (tests, debugging, a GPU box without Ray)."""
    workers = [Worker(store, config, space, worker_id=f"local-{i}-{os.getpid()}", slot=f"local-{i}")
               for i in range(config.workers)]
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
            next(d for d in done if not d.is_set()).wait(0.5)
            if on_progress:
                on_progress(count_individuals(store))
    except KeyboardInterrupt:
        for w in workers:
            w.stop()
        for d in done:
            d.wait()
        raise
    if errors:
        raise errors[0]
    return results


class WorkerActor:
    """What Ray runs: the plain Worker behind a handle that can also be told to stop."""

    def __init__(self, store: Store, config: RunConfig, space: SearchSpace, name: str) -> None:
        import os

        import ray

        actor = ray.get_runtime_context().get_actor_id()
        self.worker = Worker(store, config, space, worker_id=f"{name}-{os.getpid()}", slot=name, actor=actor)

    def run(self) -> dict[str, Any]:
        return asdict(self.worker.run())

    def stop(self) -> None:
        self.worker.stop()


def run_on_ray(store: Store, config: RunConfig, space: SearchSpace,
               on_progress: Callable[[int], None] | None = None,
               stop: threading.Event | None = None) -> list[dict[str, Any]]:
    """Run the workers as Ray actors that restart when they die (they need nothing but the store).

    Setting ``stop`` asks every actor to finish its step and return (the run stays resumable)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=config.address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING,
                 **({} if config.address else {"num_cpus": max(config.workers * config.cpus_per_worker, 1)}))
    actor_cls = ray.remote(WorkerActor).options(
        num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker,
        max_restarts=-1, max_task_retries=-1, max_concurrency=2,
    )
    actors = [actor_cls.remote(store, config, space, f"ray-{i}") for i in range(config.workers)]
    pending = [a.run.remote() for a in actors]
    results = []
    stopping = False
    try:
        while pending:
            if stop is not None and stop.is_set() and not stopping:
                stopping = True
                for a in actors:
                    a.stop.remote()
            ready, pending = ray.wait(pending, timeout=0.2 if stop is not None else 1.0)
            results.extend(ray.get(ready))
            if on_progress:
                on_progress(count_individuals(store))
    except KeyboardInterrupt:
        for a in actors:
            a.stop.remote()
        raise
    return results


__all__ = ["ConfigError", "open_run", "load_run", "run_in_process", "run_on_ray", "space_for", "total_steps"]
