"""The protocol's checks on a genome class (``evolve doctor --genome NAME``): what the engine relies on, tried
on real draws, each failure naming the check and the method.

1. ``import``: the class imports by its name, defines every required method, and its ``kind`` is that name.
2. ``JSON round trip`` (to_json, from_json): ``from_json(json.loads(json.dumps(to_json())))`` is the genome.
3. ``random draws`` (initial, and sample where defined): every draw fits the space's bounds.
4. ``mutations`` (mutate): every child fits the bounds and differs from its parent unless the mutation says
   ``identity``.
5. ``output shape`` (to_module): the module maps a batch of ``input_shape`` to ``(batch, num_classes)``.
6. ``param_count`` (param_count): agrees with the module's trainable parameters.
7. ``crossover`` (crossover), where ``supports_crossover``: both children fit the bounds.
"""

from __future__ import annotations

import json
import random
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from genomes.base import GenomeError, Mutation, SearchSpace


@dataclass(frozen=True)
class Check:
    name: str
    method: str
    ok: bool
    detail: str


def check_genome(kind: str, space: SearchSpace, draws: int = 8, mutations: int = 4, seed: int = 0) -> list[Check]:
    """Run every check on the genome class named ``kind`` (built in or ``package.module:Class``)."""
    from genomes import genome_class

    try:
        cls = genome_class(kind)
    except GenomeError as exc:
        return [Check("import", "kind", False, str(exc))]
    results = [Check("import", "kind", True, f"{cls.__module__}.{cls.__qualname__}")]
    rng = random.Random(seed)
    genomes: list[Any] = []
    results.append(_run("random draws", "initial", lambda: _draws(cls.initial, rng, space, draws, genomes)))
    if callable(getattr(cls, "sample", None)):
        results.append(_run("random draws", "sample", lambda: _draws(cls.sample, rng, space, draws, genomes)))
    if not genomes:
        return results
    results.append(_run("JSON round trip", "to_json/from_json", lambda: _round_trips(cls, genomes)))
    results.append(_run("mutations", "mutate", lambda: _mutations(cls, genomes, rng, space, mutations)))
    results.append(_run("output shape", "to_module", lambda: _output_shapes(genomes, space)))
    results.append(_run("param_count", "param_count", lambda: _param_counts(genomes, space)))
    if getattr(cls, "supports_crossover", False):
        results.append(_run("crossover", "crossover", lambda: _crossovers(cls, genomes, rng, space)))
    return results


def _run(name: str, method: str, body: Callable[[], str]) -> Check:
    try:
        return Check(name, method, True, body())
    except _Failed as exc:
        return Check(name, method, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - the class under test is the user's: report, never crash
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return Check(name, method, False, f"raised {type(exc).__name__}: {exc} ({where.filename}:{where.lineno})")


class _Failed(Exception):
    pass


def _fits(genome: Any, space: SearchSpace, what: str) -> None:
    params = genome.param_count(space.input_shape, space.num_classes)
    if params > space.max_params:
        raise _Failed(f"{what} has {params:,} parameters, over max_params {space.max_params:,}: {genome.describe()}")


def _draws(draw: Callable[..., Any], rng: random.Random, space: SearchSpace, n: int, out: list[Any]) -> str:
    for i in range(n):
        genome = draw(rng, space)
        _fits(genome, space, f"draw {i}")
        out.append(genome)
    return f"{n} draws fit the space ({space.bounds()})"


def _equal(a: Any, b: Any) -> bool:
    """Equal as values where the class defines equality (a dataclass does), else as JSON."""
    if type(a).__eq__ is not object.__eq__:
        return bool(a == b)
    return json.dumps(a.to_json(), sort_keys=True) == json.dumps(b.to_json(), sort_keys=True)


def _same(cls: type, genome: Any) -> Any:
    text = json.dumps(genome.to_json())
    back = cls.from_json(json.loads(text))
    if not _equal(back, genome):
        raise _Failed(f"from_json(to_json(g)) differs from g: {genome!r:.200} came back as {back!r:.200}")
    return back


def _round_trips(cls: type, genomes: list[Any]) -> str:
    for genome in genomes:
        _same(cls, genome)
    return f"{len(genomes)} genomes came back equal"


def _mutations(cls: type, genomes: list[Any], rng: random.Random, space: SearchSpace, n: int) -> str:
    changed = 0
    for genome in genomes:
        parent = genome
        for _ in range(n):
            result = parent.mutate(rng, space)
            if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mutation)):
                raise _Failed(f"expected (child, genomes.base.Mutation), got {result!r:.200}")
            child, mutation = result
            _fits(child, space, f"the child of {mutation.name}")
            json.dumps(mutation.to_json())
            same = _equal(child, parent)
            if same and mutation.name != "identity":
                raise _Failed(f"mutation {mutation.name!r} returned its parent unchanged ({parent.describe()}); "
                              "a mutation that changes nothing must be named 'identity'")
            changed += not same
            parent = child
    if not changed:
        hint = "" if space.hparams else (
            "; this space declares no genes to search: add some, e.g. --hparam learning_rate=log:1e-3..0.3 "
            "(or an hparams table in the config)")
        raise _Failed(f"no mutation changed anything: every one was 'identity'{hint}")
    return f"{changed} of {len(genomes) * n} mutations changed the genome, the rest said 'identity'"


def _output_shapes(genomes: list[Any], space: SearchSpace) -> str:
    import torch
    from torch import nn

    for genome in genomes[:4]:
        module = genome.to_module(space.input_shape, space.num_classes)
        if not isinstance(module, nn.Module):
            raise _Failed(f"returned {type(module).__name__}, not a torch.nn.Module")
        with torch.no_grad():
            out = module.eval()(torch.zeros(2, *space.input_shape))
        if tuple(out.shape) != (2, space.num_classes):
            raise _Failed(f"a batch of 2 of shape {tuple(space.input_shape)} gave {tuple(out.shape)}, expected "
                          f"(2, {space.num_classes}) ({genome.describe()})")
    return f"(2, {space.num_classes}) from a batch of 2 of {tuple(space.input_shape)}"


def _param_counts(genomes: list[Any], space: SearchSpace) -> str:
    for genome in genomes:
        module = genome.to_module(space.input_shape, space.num_classes)
        real = sum(p.numel() for p in module.parameters() if p.requires_grad)
        said = genome.param_count(space.input_shape, space.num_classes)
        if real != said:
            raise _Failed(f"param_count says {said:,}, the module has {real:,} trainable parameters "
                          f"({genome.describe()})")
    return f"agrees with the module on {len(genomes)} genomes"


def _crossovers(cls: type, genomes: list[Any], rng: random.Random, space: SearchSpace) -> str:
    for a, b in zip(genomes, genomes[1:]):
        first, second, mutation = a.crossover(b, rng, space)
        for child in (first, second):
            _fits(child, space, f"a child of {mutation.name}")
    return f"{len(genomes) - 1} pairs gave children that fit the space"
