"""Where the engine's log lines go: the driver's stderr, a file (``--log-file``), and back from Ray actors.

Workers that are threads of the driver log straight into its handlers. A Ray actor is another
process, perhaps on another machine, so it keeps its lines in a ``LineBuffer`` and the driver
collects them as it waits (``emit``), re-logging each under its own logger name, level and time:
they reach the same stderr and the same file as the driver's own, with the worker's id in the text.
(Ray's own forwarding of actor output, ``log_to_driver``, stays off: it would also print Ray's
start-up noise and cannot reach a file.)
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
KEPT_LINES = 10_000  # per actor between two collections: a flood is cut, never unbounded


def level_of(name: str) -> int:
    if name.lower() not in LEVELS:
        raise ValueError(f"--log-level: expected one of {', '.join(LEVELS)}, got {name!r}")
    return getattr(logging, name.upper())


def configure(level: str = "warning", file: str | None = None) -> list[logging.Handler]:
    """Send the ``evolve`` loggers at ``level`` and above to stderr and, with ``file``, to that file
    (appended). Returns the handlers added, for ``unconfigure``."""
    import sys

    levelno = level_of(level)  # a bad level refuses before any file is created
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        handlers.append(logging.FileHandler(file, encoding="utf-8"))  # may refuse: nothing changed yet
    logger = logging.getLogger("evolve")
    logger.setLevel(levelno)
    logger.propagate = False
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    return handlers


def unconfigure(handlers: list[logging.Handler]) -> None:
    logger = logging.getLogger("evolve")
    for handler in handlers:
        logger.removeHandler(handler)
        handler.close()
    if not logger.handlers:
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


class LineBuffer(logging.Handler):
    """In a Ray actor: keeps the ``evolve`` loggers' records as plain data until the driver takes them."""

    def __init__(self, level: int, prefix: str) -> None:
        super().__init__(level)
        self.prefix = prefix
        self.lines: deque[dict[str, Any]] = deque()
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:  # called under the handler's lock
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed log call must not break the worker
            self.handleError(record)
            return
        if len(self.lines) >= KEPT_LINES:
            self.lines.popleft()
            self.dropped += 1
        self.lines.append({"name": record.name, "levelno": record.levelno, "created": record.created,
                           "msg": text if self.prefix in text else f"[{self.prefix}] {text}"})

    def take(self) -> list[dict[str, Any]]:
        """Every line kept so far, once; a flood cut to the last ``KEPT_LINES`` says how many it lost."""
        self.acquire()
        try:
            out, self.lines = list(self.lines), deque()
            dropped, self.dropped = self.dropped, 0
        finally:
            self.release()
        if dropped:
            first = out[0] if out else {"created": 0.0}
            out.insert(0, {"name": "evolve.runner.logsetup", "levelno": logging.WARNING, "created": first["created"],
                           "msg": f"[{self.prefix}] {dropped} earlier log lines dropped (more than {KEPT_LINES:,} "
                                  "between two collections)"})
        return out

    @classmethod
    def install(cls, level: int, prefix: str) -> LineBuffer:
        buffer = cls(level, prefix)
        logger = logging.getLogger("evolve")
        logger.setLevel(level)
        logger.addHandler(buffer)
        return buffer


def emit(lines: list[dict[str, Any]]) -> None:
    """In the driver: log what an actor's ``LineBuffer`` kept, as if it had been logged here."""
    for line in lines:
        record = logging.makeLogRecord({**line, "levelname": logging.getLevelName(line["levelno"]), "args": None,
                                        "msecs": (line["created"] % 1) * 1000})
        logger = logging.getLogger(line["name"])
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
