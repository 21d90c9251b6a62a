"""TensorBoard on a live run: a logdir kept in step with a running store (``LiveSync``, called from a
run's progress), and ``serve``, which starts TensorBoard and keeps syncing until Ctrl-C."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from evolve.store.backend import Store, StoreError
from evolve.views.tensorboard import SyncReport, prepare_logdir, sync

log = logging.getLogger(__name__)


class LiveSync:
    """Keeps a logdir in step with a running store; made to be called from ``on_progress``.

    ``live = LiveSync(store, logdir)``; ``live(done)`` syncs when ``every`` seconds have passed
    since the last sync (lineage views at most every ``views_every``); ``live.close()`` does a
    last full sync. Failures are logged, never raised: views must not stop a run.
    """

    def __init__(self, store: Store, logdir: str, every: float = 10.0, views_every: float = 60.0,
                 **options: Any) -> None:
        self.store, self.logdir = store, logdir
        self.every, self.views_every = every, views_every
        self.options = options
        self.last: float = float("-inf")
        self.report: SyncReport | None = None

    def __call__(self, done: int | None = None) -> SyncReport | None:
        if time.monotonic() - self.last < self.every:
            return None
        return self._sync(self.views_every)

    def close(self) -> SyncReport | None:
        return self._sync(0.0)

    def _sync(self, views_every: float) -> SyncReport | None:
        self.last = time.monotonic()
        try:
            self.report = sync(self.store, self.logdir, views_every=views_every, **self.options)
        except Exception as exc:  # noqa: BLE001 - views are a side show; the run goes on
            log.warning("tensorboard views of %s not updated: %s", self.store.url, exc)
            return None
        return self.report


def tensorboard_command(logdir: str, port: int, reload_interval: float = 5.0) -> list[str]:
    import sys

    return [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
            "--port", str(port), "--reload_interval", str(max(1, int(reload_interval)))]


def serve(store: Store, logdir: str, port: int = 6006, interval: float = 5.0, views_every: float = 30.0,
          on_sync: Callable[[SyncReport], None] | None = None, **options: Any) -> int:
    """Start TensorBoard on ``logdir`` (127.0.0.1:``port``) and keep syncing it every ``interval``
    seconds until Ctrl-C. Returns TensorBoard's exit code if it stops by itself, 0 on Ctrl-C."""
    import signal
    import subprocess
    import threading

    logdir = prepare_logdir(logdir)
    report = sync(store, logdir, **options)
    if on_sync:
        on_sync(report)
    process = subprocess.Popen(tensorboard_command(logdir, port, interval))
    previous = None
    if threading.current_thread() is threading.main_thread():
        def stop(signum, frame):  # SIGTERM (a service manager, `kill`) stops like Ctrl-C
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            try:
                process.wait(timeout=interval)
                return process.returncode
            except subprocess.TimeoutExpired:
                pass
            try:
                report = sync(store, logdir, views_every=views_every, **options)
            except StoreError as exc:
                log.warning("sync failed (will retry): %s", exc)
                continue
            if on_sync and (report.new or report.views or report.best_model):
                on_sync(report)
    except KeyboardInterrupt:
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
