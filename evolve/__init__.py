"""evolve: distributed, asynchronous evolution of neural architectures.

The Python API (``evolve.api``): ``evolve.run(...)``, ``evolve.resume(url)``, ``evolve.open(url)``
give a :class:`Run`; ``evolve.configure(...)`` the config a run would use.
"""

__version__ = "0.1.0"

from evolve.api import Run, configure, open, resume, run  # noqa: E402,A004

__all__ = ["Run", "__version__", "configure", "open", "resume", "run"]
