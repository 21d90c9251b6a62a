"""Which worker holds each step in flight, read from the store as any observer would."""

from __future__ import annotations

from evolve.store.backend import Store
from evolve.store.keys import step_of


def holders(store: Store) -> dict[int, str]:
    """Steps in flight (claimed, no child yet) -> the worker holding each: its last adopter, else its claimant.

    Heartbeats cannot say this: a step shorter than a quarter lease writes none.
    """
    done = {step_of(k) for k in store.list_keys("individuals/")}
    adopters: dict[int, str] = {}
    for key in store.list_keys("adoptions/"):  # keys sort by (step, index): the last one per step wins
        if step_of(key) in done:
            continue
        record = store.read_json(key)
        if record:
            adopters[step_of(key)] = record["worker"]
    out = {}
    for key in store.list_keys("claims/"):
        step = step_of(key)
        if step in done:
            continue
        if step in adopters:
            out[step] = adopters[step]
        else:
            record = store.read_json(key)
            if record:
                out[step] = record["worker"]
    return out
