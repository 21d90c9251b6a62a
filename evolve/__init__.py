"""evolve: distributed, asynchronous evolution of neural architectures.

The Python API (``evolve.api``): ``evolve.run(...)``, ``evolve.resume(url)``, ``evolve.open(url)``
give a :class:`Run`; ``evolve.configure(...)`` the config a run would use. They are loaded on first
use, so that a process importing one engine module (a Ray worker) loads no more than it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
API_VERSION = 1
"""The public API's version (``tests/api_surface.txt`` holds its names and signatures): raised when a
change would break code written against it."""

_PUBLIC = {"Run": "evolve.api", "configure": "evolve.api", "open": "evolve.api", "resume": "evolve.api",
           "run": "evolve.api", "FitnessContext": "evolve.training.fitness", "Individual": "evolve.store.records"}

__all__ = ["API_VERSION", "FitnessContext", "Individual", "Run", "__version__", "configure", "open", "resume",
           "run"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'evolve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
