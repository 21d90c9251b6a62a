"""The ``evolve`` command line: a layer over the Python API (``evolve.api``).

``app`` is the Typer application (the console script ``evolve`` and ``python -m evolve.cli``);
its commands live in ``evolve.cli.main`` (run, resume, finalize, ...), ``evolve.cli.read`` (what a
store holds) and ``evolve.cli.views`` (TensorBoard, plots, the Parquet table).
"""

from evolve.cli.main import app

__all__ = ["app"]
