"""How many threads torch uses in the driver's process: chosen, not left to torch's default.

torch starts with one intra-op thread per core. Workers that run as threads of the driver (the
local executor) each train a child at once, so with torch's default they fight over every core; a
Ray actor gets its own process, and Ray sets ``OMP_NUM_THREADS`` to its CPUs. So the search runs on
one torch thread per worker.

A training after the search (the best's final training, the LeNet-5 reference) runs alone, and uses
the cores that are free now (idle over half a second, ``/proc/stat``), at least one. On an idle
2-core machine that is 2 (a 28k-parameter conv net: 300 batches in 14.6 s, against 24 s on one
thread); with another job on one core it is 1 (two threads took 35 s there, one thread 24 s:
threads that wait for a busy core stall every step).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def free_cores(sample_seconds: float = 0.5, settle: int = 4) -> int:
    """The cores not busy now, at least 1: the machine's cores times the share of CPU time that was idle over
    ``sample_seconds`` (``/proc/stat``). While that share is rising (processes that just ended, such as the
    search's Ray workers, which keep both cores busy for half a second to a second as they go), up to
    ``settle`` more samples are taken and the last one counts. Where ``/proc/stat`` cannot be read, the cores
    less the 1-minute load average: a lagging figure (right after the search it still counts the search)."""
    cores = os.cpu_count() or 1
    idle = _idle_share(sample_seconds)
    for _ in range(settle if idle is not None else 0):
        if cores * idle >= cores - 0.5:
            break
        later = _idle_share(sample_seconds)
        if later is None or later <= idle:
            break
        idle = later
    if idle is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on this platform
            return cores
    else:
        busy = cores * (1.0 - idle)
    return max(1, min(cores, int(cores - busy + 0.5)))


def _idle_share(seconds: float) -> float | None:
    """The share of all cores' time spent idle over the next ``seconds`` (None without ``/proc/stat``)."""
    import time

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)  # idle + iowait, all

    first = sample()
    if first is None:
        return None
    time.sleep(seconds)
    second = sample()
    if second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1])


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
