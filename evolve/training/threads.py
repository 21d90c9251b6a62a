"""How many threads torch uses in the driver's process: chosen, not left to torch's default.

torch starts with one intra-op thread per core. Workers that run as threads of the driver (the
local executor) each train a child at once, so with torch's default they fight over every core; a
Ray actor gets its own process, and Ray sets ``OMP_NUM_THREADS`` to its CPUs. So the search runs on
one torch thread per worker.

A training after the search (the best's final training, the LeNet-5 reference) runs alone, and uses
the cores that are free now: the machine's cores less its load average, at least one. On an idle
2-core machine that is 2 (a 28k-parameter conv net: 300 batches in 14.6 s, against 24 s on one
thread); with another job on one core it is 1 (two threads took 35 s there, one thread 24 s:
threads that wait for a busy core stall every step).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def free_cores() -> int:
    """The cores not busy now: the machine's cores less its 1-minute load average, at least 1."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch on ``count`` intra-op threads within; as before after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)
