"""Every key a store holds, in one place: the store's layout.

::

    run.json                                   the run's definition, written once (evolve.runner.record)
    extensions/<steps>.json                    the run was extended to <steps> children
    claims/<s>.json                            who owns step s (with attempt 0's selection)
    selections/<s>-<attempt>.json              a later attempt's (parent, loser) for step s
    adoptions/<s>-<index>.json                 adopter <index> took over lapsed step s
    heartbeats/<s>[-<adoption>].json           the holder of step s is alive
    heartbeats/<s>[-<adoption>].released.json  that holder gave step s up: adopt it now
    individuals/<s>.json                       step s's child: genome, fitness, provenance
    weights/<s>[-<nonce>].safetensors          its weights (one name per trainer)
    deaths/<s>.json                            the tombstone of individual s
    generations/<g>.json                       generational mode: generation g's members
    log/<block>/<s>.<mark>                     what selection needs, in empty objects' keys (evolve.store.marks)
    pins/<s>-<name>.json                       <name> will read step s's weights: gc keeps them
    results/lenet5.json, results/tested/<s>.json, results/final/<s>[-<nonce>].*
                                               what a run measured after the search (evolve.final.final_model)
    results/finalize/<stage>.json, results/finalize/<stage>-<i>-<nonce>.safetensors
                                               evolve finalize's stages (evolve.final.finalize)
    damaged/<key>                              a record that did not parse, moved aside by `evolve check --repair`

Step numbers are zero-padded to ``PAD`` digits, so the lexical order of keys is the numeric
order of steps. The store itself knows none of this; it only refuses malformed keys.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

PAD = 12  # digits in a step number: lexical order of keys = numeric order of steps
RUN_KEY = "run.json"


def _step(step: int) -> str:
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 10**PAD:
        raise ValueError(f"step must be an int in [0, 10**{PAD}), got {step!r}")
    return f"{step:0{PAD}d}"


def individual_key(step: int) -> str:
    """``individuals/000000000042.json``: the genome and results of step 42's child."""
    return f"individuals/{_step(step)}.json"


def weights_key(step: int, nonce: str | None = None) -> str:
    """``weights/000000000042.safetensors`` (or ``...42-<nonce>.safetensors``, one per trainer)."""
    if nonce is not None and not re.fullmatch(r"[A-Za-z0-9_]+", nonce):
        raise ValueError(f"weights nonce must be letters, digits or _, got {nonce!r}")
    return f"weights/{_step(step)}{'' if nonce is None else '-' + nonce}.safetensors"


def death_key(step: int) -> str:
    """``deaths/000000000042.json``: the tombstone of individual 42."""
    return f"deaths/{_step(step)}.json"


def claim_key(step: int) -> str:
    """``claims/000000000042.json``: who owns step 42."""
    return f"claims/{_step(step)}.json"


_STEP_NAME = re.compile(r"(\d+)(?:-[^/]*)?\.[^/]+")


def step_of(key: str) -> int:
    """The step number of a per-step key: ``deaths/000000000042.json`` -> 42.

    Suffixes after a ``-`` are allowed (``weights/000000000042-ab12.safetensors``).
    """
    name = key.rsplit("/", 1)[-1]
    match = _STEP_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"not a per-step key: {key!r}")
    return int(match.group(1))


_STEP_INDEX = re.compile(r"(\d+)(?:-(\d+))?\.json")


def step_and_index(key: str) -> tuple[int, int | None] | None:
    """(step, index) of ``selections/000000000042-003.json`` -> (42, 3); ``.../000000000042.json`` ->
    (42, None); None for any other name."""
    match = _STEP_INDEX.fullmatch(key.rsplit("/", 1)[-1])
    if match is None:
        return None
    return int(match.group(1)), None if match.group(2) is None else int(match.group(2))


def _key(prefix: str, step: int, suffix: str = "") -> str:
    return f"{prefix}/{step:0{PAD}d}{suffix}.json"


def adoption_key(step: int, index: int) -> str:
    return _key("adoptions", step, f"-{index:03d}")


def heartbeat_key(step: int, adoption: int = -1) -> str:
    """The claimant's (``adoption`` -1) or adopter ``adoption``'s heartbeat for ``step``."""
    return _key("heartbeats", step, "" if adoption < 0 else f"-{adoption:03d}")


def release_key(step: int, adoption: int = -1) -> str:
    """``heartbeats/<s>[-<adoption>].released.json``: that holder gave step s up (stopped, or its record was
    moved aside by a repair): observers adopt it without waiting out the lease."""
    return _key("heartbeats", step, ("" if adoption < 0 else f"-{adoption:03d}") + ".released")


_RELEASE = re.compile(r"(\d+)(?:-(\d+))?\.released\.json")


def release_of(key: str) -> tuple[int, int] | None:
    """(step, adoption) of a ``release_key`` (-1: the claimant's); None for any other name."""
    match = _RELEASE.fullmatch(key.rsplit("/", 1)[-1])
    if match is None:
        return None
    return int(match.group(1)), -1 if match.group(2) is None else int(match.group(2))


def generation_key(generation: int) -> str:
    return _key("generations", generation)


def extension_key(steps: int) -> str:
    """``extensions/<steps>.json``: the run was extended (``resume --steps``) to ``steps`` children.

    run.json is written once, so a longer run is recorded beside it; the run's length is the
    largest of run.json's ``steps`` and every extension's.
    """
    return f"extensions/{steps:0{PAD}d}.json"


def pin_key(step: int, name: str) -> str:
    """``pins/<step>-<name>.json``: ``name`` (a command, a finalize stage) will read step's weights."""
    return f"pins/{step:0{PAD}d}-{name}.json"


LENET_KEY = "results/lenet5.json"


def record_key_of_tested(step: int) -> str:
    return f"results/tested/{step:0{PAD}d}.json"


def record_key_of_final(step: int) -> str:
    return f"results/final/{step:0{PAD}d}.json"


def weights_key_of_final(step: int, nonce: str) -> str:
    """Each trainer's own key: of two racing, the loser of the record deletes its weights."""
    return f"results/final/{step:0{PAD}d}-{nonce}.safetensors"


STAGE_CLAIMS_PREFIX = "results/claims/"
"""``results/claims/<stage>[-<j>].json``: who computes a stage after the search (``evolve.final.once``)."""

FINALIZE_PREFIX = "results/finalize/"
_STAGE = re.compile(r"[a-z][a-z0-9-]*")


def finalize_key(stage: str) -> str:
    """``results/finalize/<stage>.json``: one finalize stage's record (``evolve.final.finalize``)."""
    if not _STAGE.fullmatch(stage):
        raise ValueError(f"finalize stage names are lower-case letters, digits and -, got {stage!r}")
    return f"{FINALIZE_PREFIX}{stage}.json"


def finalize_weights_key(stage: str, index: int, nonce: str) -> str:
    """``results/finalize/<stage>-<index>-<nonce>.safetensors``: a stage's weights, one name per trainer."""
    return f"{finalize_key(stage)[:-5]}-{index}-{nonce}.safetensors"


def finalize_stage_of(weights_key: str) -> str:
    """The stage a finalize weights key belongs to: ``results/finalize/member-12-0-<nonce>.safetensors`` -> ``member-12``."""
    return weights_key.removeprefix(FINALIZE_PREFIX).rsplit("-", 2)[0]


LOG_BLOCK = 500  # steps per log folder: a local listing reads one or two folders of at most 1,500 names


def log_folder(step: int) -> str:
    return f"log/{step // LOG_BLOCK:09d}/"


def claim_mark(step: int) -> str:
    return f"{log_folder(step)}{step:0{PAD}d}.c"


def kill_mark(step: int, attempt: int, loser: int, parent: int | None = None) -> str:
    tail = "" if parent is None else f".{parent:0{PAD}d}"
    return f"{log_folder(step)}{step:0{PAD}d}.k{attempt:03d}.{loser:0{PAD}d}{tail}"


def done_mark(step: int, loser: int | None, fitness: float) -> str:
    who = "n" if loser is None else f"{loser:0{PAD}d}"
    return f"{log_folder(step)}{step:0{PAD}d}.d.{who}.{struct.pack('>d', float(fitness)).hex()}"


@dataclass(frozen=True)
class Mark:
    step: int
    done: bool  # a child (else a claim, or a kill when it names a loser)
    loser: int | None
    fitness: float | None = None
    parent: int | None = None  # a kill's: whose weights the step inherits


def parse_mark(key: str) -> Mark | None:
    """The mark a ``log/`` key carries; None for anything else."""
    parts = key.rsplit("/", 1)[-1].split(".")
    try:
        if len(parts) == 2 and parts[1] == "c":
            return Mark(int(parts[0]), False, None)
        if len(parts) in (3, 4) and parts[1].startswith("k"):
            return Mark(int(parts[0]), False, int(parts[2]), parent=int(parts[3]) if len(parts) == 4 else None)
        if len(parts) == 4 and parts[1] == "d":
            loser = None if parts[2] == "n" else int(parts[2])
            return Mark(int(parts[0]), True, loser, struct.unpack(">d", bytes.fromhex(parts[3]))[0])
    except (ValueError, struct.error):
        return None
    return None


def selection_key(step: int, attempt: int) -> str:
    return f"selections/{step:0{PAD}d}-{attempt:03d}.json"
