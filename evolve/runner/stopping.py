"""Stopping a run from outside: Ctrl-C, SIGTERM and SIGHUP all stop it the same way.

SIGTERM is what docker, Kubernetes, SLURM and systemd send to stop a job, and what a preemptible
cloud node gets before it goes; SIGHUP comes with a closed terminal. In the driver's main thread
each raises ``KeyboardInterrupt``, as Ctrl-C does, and is remembered (``received``), so that one
path handles them all::

    the driver asks every worker to stop
    a step in flight may finish within the grace (--grace, 10 s by default)
    a step still in flight after it is given up (``Worker.release``): others adopt it at once
    one line: what was done, and the command that resumes; exit 128 + the signal (130, 143, 129)

Ray installs its own SIGTERM handler when it starts (it dies with SIGABRT and a C++ dump), so the
launcher installs ours again after ``ray.init`` (``reinstall``). A Ray actor that gets SIGTERM (its
node is going away) does the same for its own step (``evolve.runner.launch.WorkerActor``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

GRACE_SECONDS = 10.0
SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)

_state: dict[str, Any] = {"active": False, "received": None}


class Interrupted(KeyboardInterrupt):
    """A run stopped from outside: by ``signum`` (SIGINT for Ctrl-C), with ``done`` of ``total``
    individuals in the store at ``url``, the steps in flight given up after the grace in ``released``."""

    def __init__(self, url: str, done: int, total: int, released: list[int], signum: int, grace: float) -> None:
        super().__init__(url)
        self.url, self.done, self.total, self.released, self.signum, self.grace = url, done, total, released, signum, grace

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        """The one line a user reads: what was done, and the command that resumes."""
        how = "interrupted (Ctrl-C)" if self.signum == signal.SIGINT else f"stopped by {signal.Signals(self.signum).name}"
        if self.done >= self.total and not self.released:  # in what comes after the search
            return (f"{how} after the search ({self.done}/{self.total} individuals): `evolve resume {self.url}` "
                    "finishes what comes after it (the best's test, its final training, the reference)")
        steps = ", ".join(map(str, self.released))
        gave = (f"; step{'s' if len(self.released) > 1 else ''} {steps} still training after the {self.grace:g} s "
                "grace given up (adopted at once)" if self.released else "")
        return (f"{how}: {self.done}/{self.total} individuals in the store{gave}; `evolve resume {self.url}` "
                "continues the run")


def received() -> int:
    """The signal that stopped the run: SIGTERM or SIGHUP if one came, else SIGINT (Ctrl-C)."""
    return _state["received"] or signal.SIGINT


def _handler(signum: int, frame: Any) -> None:
    _state["received"] = signum
    raise KeyboardInterrupt


def reinstall() -> None:
    """After ``ray.init`` (which installs Ray's own SIGTERM handler): ours again, if ``stop_signals`` is on."""
    if _state["active"] and threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handler)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within: SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, remembered by ``received``.
    Elsewhere than the main thread, nothing changes (Python delivers signals to the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in SIGNALS}
    _state.update(active=True, received=None)
    reinstall()
    try:
        yield
    finally:
        _state["active"] = False
        for signum, handler in before.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
