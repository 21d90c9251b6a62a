"""evolve: distributed, asynchronous evolution of neural architectures."""

__version__ = "0.1.0"
