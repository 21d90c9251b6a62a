"""``python -m evolve.cli ARGS``: the ``evolve`` command without its console script."""

from evolve.cli.main import main

main()
