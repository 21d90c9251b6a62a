"""The population store: create-once records on any fsspec filesystem, their keys, the log of marks, and
the read model (``docs/ARCHITECTURE.md`` gives the atomicity model and the invariants).

``Store`` (``evolve.store.backend``) is named here too, the path it had before the store became a package.
"""

from evolve.store.backend import Store

__all__ = ["Store"]
