"""Genetic CNN's generational algorithm (Xie & Yuille 2017), as plain functions.

Generation g+1 is bred from generation g in one go:

    selection:  N draws by roulette, P(n) proportional to r_n - min(r)
    crossover:  pairs (0,1), (2,3), ... cross with probability p_c (per-stage swaps, q_c)
    mutation:   each individual mutates with probability p_m (per-bit flips, q_m)

Workers settle the result through the store (the first to create generations/<g+1>
wins), then each child is evaluated as one step that replaces its slot's predecessor.
A genome evaluated before is re-evaluated and its fitness averaged over all evaluations.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from genomes import Genome, Mutation, SearchSpace


def roulette(fitness: Sequence[float], count: int, rng: random.Random) -> list[int]:
    """Indices drawn with probability proportional to fitness above the minimum (uniform if all equal)."""
    low = min(fitness)
    weights = [f - low for f in fitness]
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
            parents = a["parents"] + b["parents"]
            a.update(genome=child_a, parents=parents, ops=[mutation.to_json()])
            b.update(genome=child_b, parents=list(parents), ops=[mutation.to_json()])
    for member in members:
        if rng.random() < p_m:
            member["genome"], mutation = member["genome"].mutate(rng, space)
            member["ops"].append(mutation.to_json())
    return [{"genome": m["genome"].to_json(), "parents": m["parents"], "mutation": describe_ops(m["ops"])}
            for m in members]


def describe_ops(ops: list[dict[str, Any]]) -> dict[str, Any]:
    """One mutation record for a member: 'copy', 'crossover', 'bit-flip' or 'crossover+bit-flip'."""
    if not ops:
        return Mutation("copy").to_json()
    return {"name": "+".join(op["name"] for op in ops), "params": {op["name"]: op["params"] for op in ops}}


def averaged(raw: float, earlier: Sequence[float]) -> float:
    """Xie & Yuille re-evaluate a repeated genome and keep the mean of all its evaluations."""
    return (raw + sum(earlier)) / (1 + len(earlier))
