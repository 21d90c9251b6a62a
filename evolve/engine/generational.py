"""Genetic CNN's generational algorithm (Xie & Yuille 2017), as plain functions.

Generation g+1 is bred from generation g in one go:

    selection:  N draws by roulette, P(n) proportional to r_n - min(r)
    crossover:  pairs (0,1), (2,3), ... cross with probability p_c (per-stage swaps, q_c)
    mutation:   each individual mutates with probability p_m (per-bit flips, q_m)

Workers settle the result through the store (the first to create generations/<g+1>
wins), then each child is evaluated as one step that replaces its slot's predecessor.
A genome evaluated before is re-evaluated and its fitness averaged over all evaluations.

A crossover child names two parents: first the one whose code its unswapped stages are,
then its partner, from which it took the stages in ``swapped_stages``. Children are
trained from scratch, as in the paper; where a run turns weight inheritance on, each stage
is inherited from the parent its code came from (:func:`crossover_weights`).
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Mapping, Sequence

from evolve.engine.child import Child, initial_child
from evolve.seeding import rng_for
from evolve.store.keys import generation_key
from genomes import Genome, Mutation, SearchSpace, genome_from_json
from genomes.gcnn.genome import stage_of


def roulette(fitness: Sequence[float], count: int, rng: random.Random) -> list[int]:
    """Indices drawn with probability proportional to fitness above the finite minimum (uniform if all
    equal); a failed individual (fitness -inf or NaN: ``evolve.training.fitness``) is never drawn unless all failed."""
    finite = [f for f in fitness if math.isfinite(f)]
    low = min(finite, default=0.0)
    weights = [f - low if math.isfinite(f) else 0.0 for f in fitness]
    if sum(weights) <= 0:
        return [rng.randrange(len(fitness)) for _ in range(count)]
    return rng.choices(range(len(fitness)), weights=weights, k=count)


def breed(previous: Sequence[tuple[int, Genome, float]], rng: random.Random, space: SearchSpace,
          p_m: float, p_c: float) -> list[dict[str, Any]]:
    """The next generation's members: genome JSON, parent steps and the operators applied."""
    picks = roulette([f for _, _, f in previous], len(previous), rng)
    members = [{"genome": previous[i][1], "parents": [previous[i][0]], "ops": []} for i in picks]
    for a, b in zip(members[0::2], members[1::2]):
        if rng.random() < p_c:
            child_a, child_b, mutation = a["genome"].crossover(b["genome"], rng, space)
            # each child names first the parent its unswapped stages came from (b's are a's mirror)
            first_a, first_b = a["parents"], b["parents"]
            a.update(genome=child_a, parents=first_a + first_b, ops=[mutation.to_json()])
            b.update(genome=child_b, parents=first_b + first_a, ops=[mutation.to_json()])
    for member in members:
        if rng.random() < p_m:
            member["genome"], mutation = member["genome"].mutate(rng, space)
            member["ops"].append(mutation.to_json())
    return [{"genome": m["genome"].to_json(), "parents": m["parents"], "mutation": describe_ops(m["ops"])}
            for m in members]


def describe_ops(ops: list[dict[str, Any]]) -> dict[str, Any]:
    """One mutation record for a member: 'copy', 'crossover', 'bit-flip', 'identity' (no bit flipped, or the
    child broke a bound) or a crossover's combination with one of them ('crossover+bit-flip')."""
    if not ops:
        return Mutation("copy").to_json()
    return {"name": "+".join(op["name"] for op in ops), "params": {op["name"]: op["params"] for op in ops}}


def swapped_stages(mutation: Mapping[str, Any] | None) -> list[int]:
    """The stages a member took from its second parent by crossover (none without a crossover)."""
    params = (mutation or {}).get("params") or {}
    return [int(s) for s in (params.get("crossover") or {}).get("swapped_stages") or []]


def crossover_weights(first: bytes, second: bytes | None, swapped: Sequence[int]) -> bytes:
    """What a crossover child inherits: the swapped stages' tensors from ``second``, the rest from ``first``.

    ``first`` is the parent whose code the unswapped stages are. The classifier head reads the
    last stage's output, so it goes with the last stage. Without ``second``'s weights the swapped
    stages are left out and train from scratch, never taken from the parent whose code they did
    not come from.
    """
    from safetensors.torch import load, save


    mine = load(first)
    last = max((s for s in map(stage_of, mine) if s is not None), default=0)

    def owner(key: str) -> int:
        stage = stage_of(key)
        return last if stage is None else stage

    wanted = set(swapped)
    merged = {k: v for k, v in mine.items() if owner(k) not in wanted}
    if second is not None:
        merged.update({k: v for k, v in load(second).items() if owner(k) in wanted})
    return save(merged)


def averaged(raw: float, earlier: Sequence[float]) -> float:
    """Xie & Yuille re-evaluate a repeated genome and keep the mean of all its evaluations."""
    return (raw + sum(earlier)) / (1 + len(earlier))


class Generational:
    """The breeder of Genetic CNN's mode (``evolve.engine.breeder``): step s is member s mod N of generation
    s div N, which the first worker to find the previous generation complete breeds and settles."""

    claim_chooser = None  # a step selects nothing: its generation record says who it is
    collects = False  # a crossover child reads two parents' weights, named by no kill mark

    def __init__(self, config: Any, space: SearchSpace, population: Any, worker_id: str) -> None:
        self.config, self.space, self.population, self.worker_id = config, space, population, worker_id

    def waits_for(self, step: int) -> range:
        """The previous generation: it is what this step's generation is bred from."""
        first = (step // self.config.population - 1) * self.config.population
        return range(first, first + self.config.population)

    def child(self, step: int) -> Child:
        cfg, pop = self.config, self.population
        if step < cfg.population:
            return initial_child(step, cfg, self.space)
        generation, slot = divmod(step, cfg.population)
        member = self._settle_generation(generation)["members"][slot]
        pop.kill(step - cfg.population, step, 0, member["parents"][0])
        return Child(genome_from_json(member["genome"]), {
            "origin": "generation", "generation": generation, "parents": member["parents"],
            "mutation": member["mutation"], "loser": step - cfg.population, "attempt": 0,
        }, member["parents"][0])

    def _settle_generation(self, generation: int) -> dict[str, Any]:
        """Generation ``generation``'s record, bred here if nobody has written it yet (create-once)."""
        store = self.population.store
        record = store.read_json(generation_key(generation))
        if record is None:
            store.create_json(generation_key(generation), self._next_generation(generation))
            record = store.read_json(generation_key(generation))
        return record

    def _next_generation(self, generation: int) -> dict[str, Any]:
        cfg, pop = self.config, self.population
        first = (generation - 1) * cfg.population
        previous = [(s, genome_from_json(pop.individual(s)["genome"]), float(pop.individual(s)["fitness"]))
                    for s in range(first, first + cfg.population)]
        members = breed(previous, rng_for(cfg.seed, "generation", generation), self.space, cfg.p_m, cfg.p_c)
        return {"generation": generation, "members": members, "worker": self.worker_id, "created_at": time.time()}

    def inherited(self, provenance: dict[str, Any], parent: int | None, read: Any) -> bytes | None:
        """A crossover child takes each stage from the parent whose code that stage came from."""
        if parent is None:
            return None
        weights = read(parent)
        swapped = swapped_stages(provenance.get("mutation")) if provenance.get("origin") == "generation" else []
        if weights is None or not swapped:
            return weights
        return crossover_weights(weights, read(provenance["parents"][1]), swapped)

    def fitness(self, step: int, genome_hash: str, outcome: Any) -> tuple[float, dict[str, Any]]:
        """A genome evaluated in earlier generations: the mean of all its evaluations."""
        if outcome.status != "ok":
            return outcome.fitness, {}
        before = step - step % self.config.population
        earlier = [float(r["raw_fitness"]) for r in self.population.records(range(before)).values()
                   if r.get("hash") == genome_hash and r.get("status") == "ok"]
        return averaged(outcome.fitness, earlier), {"evaluations": len(earlier) + 1}
