"""All randomness derives from the run seed and the step number."""

from __future__ import annotations

import hashlib
import json
import random


def derive_seed(run_seed: int, *parts: int | str) -> int:
    """A 63-bit seed that depends only on the run seed and ``parts`` (e.g. step, attempt)."""
    digest = hashlib.sha256(json.dumps([run_seed, *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def rng_for(run_seed: int, *parts: int | str) -> random.Random:
    return random.Random(derive_seed(run_seed, *parts))
