"""evolve: distributed, asynchronous evolution of neural architectures.

The Python API (``evolve.api``): ``evolve.run(...)``, ``evolve.resume(url)``, ``evolve.open(url)``
give a :class:`Run`; ``evolve.configure(...)`` the config a run would use.
"""

__version__ = "0.1.0"
API_VERSION = 1
"""The public API's version (``tests/api_surface.txt`` holds its names and signatures): raised when a
change would break code written against it."""

from evolve.api import Run, configure, open, resume, run  # noqa: E402,A004
from evolve.fitness import FitnessContext  # noqa: E402
from evolve.records import Individual  # noqa: E402

__all__ = ["API_VERSION", "FitnessContext", "Individual", "Run", "__version__", "configure", "open", "resume",
           "run"]
