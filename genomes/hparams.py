"""Hyperparameter genes: training settings that evolve with the network (seed 004's genetic algorithm;
population-based training, Jaderberg et al. 2017, when weights are inherited).

A run declares each gene once (``[hparams]`` in a config file, ``hparams={...}`` in the API,
``--hparam NAME=SPEC`` on the command line); every individual carries its values in its genome's JSON
under ``"hparams"``. Three types, each with a JSON form and a one-line form::

    {"float": [1e-3, 0.3], "log": true}   "log:1e-3..0.3"    a float in a range, log-scaled or linear
    {"int": [16, 128], "step": 16}        "16..128/16"       an int in a range, on a grid of ``step``
    {"choice": ["sgd", "adam"]}           "sgd,adam"         one of the values (strings, numbers, bools)

How a gene mutates (PBT's perturb-or-resample, Jaderberg et al.; Ray Tune's ``resample_probability``
0.25): with probability ``RESAMPLE`` it is redrawn from its declaration, otherwise perturbed --
a log-scaled float multiplied by a log-uniform factor in [1/2, 2] (the factor of Real et al.'s
learning-rate mutation), a linear float moved by up to a quarter of its range, an int moved one
``step`` -- then clipped to its range. A choice is always redrawn among the other values (it has no
order to perturb along). A mutation always changes the value where the gene has more than one.

Which genes a mutation changes: each mutable gene with probability 1/m (m of them), at least one, as a
bit-flip GA does. Whether it changes the architecture, the genes or both is up to the genome
(``mutate_parts``): one of the three, uniformly, where both exist.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar, Union

from genomes.base import GenomeError, Mutation

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu")
"""What an ``activation`` gene may name (``genomes.modules`` swaps them in)."""
INITS = ("kaiming", "xavier", "orthogonal")
"""What an ``init`` gene may name (``genomes.modules.initialise``)."""
RESAMPLE = 0.25
MAX_TRIES = 16
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
Value = Union[bool, int, float, str]


@dataclass(frozen=True)
class FloatGene:
    low: float
    high: float
    log: bool = False

    def draw(self, rng: random.Random) -> float:
        if self.log:
            return _clip(math.exp(rng.uniform(math.log(self.low), math.log(self.high))), self.low, self.high)
        return rng.uniform(self.low, self.high)

    def perturb(self, value: float, rng: random.Random) -> float:
        if self.log:
            return value * math.exp(rng.uniform(-math.log(2), math.log(2)))
        return value + rng.uniform(-0.25, 0.25) * (self.high - self.low)

    def mutate(self, value: Any, rng: random.Random) -> float:
        if self.low == self.high:
            return self.low
        for _ in range(MAX_TRIES):
            new = self.draw(rng) if rng.random() < RESAMPLE else _clip(self.perturb(value, rng), self.low, self.high)
            if new != value:
                return new
        return self.high if value == self.low else self.low

    def check(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not self.low <= value <= self.high:
            raise GenomeError(f"{path}: expected a float in [{self.low:g}, {self.high:g}], got {value!r}")
        return float(value)

    def values(self) -> int:
        return 1 if self.low == self.high else 2

    def to_json(self) -> dict[str, Any]:
        return {"float": [self.low, self.high], "log": self.log}

    def describe(self) -> str:
        return f"{'log:' if self.log else ''}{self.low:g}..{self.high:g}"


@dataclass(frozen=True)
class IntGene:
    low: int
    high: int
    step: int = 1

    @property
    def count(self) -> int:
        return (self.high - self.low) // self.step + 1

    def draw(self, rng: random.Random) -> int:
        return self.low + self.step * rng.randrange(self.count)

    def mutate(self, value: Any, rng: random.Random) -> int:
        if self.count == 1:
            return self.low
        if rng.random() < RESAMPLE:
            index = (value - self.low) // self.step
            other = rng.randrange(self.count - 1)
            return self.low + self.step * (other + (other >= index))
        move = rng.choice((-1, 1)) * self.step
        if not self.low <= value + move <= self.high:
            move = -move
        return value + move

    def check(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high \
                or (value - self.low) % self.step:
            raise GenomeError(f"{path}: expected an int in [{self.low}, {self.high}] in steps of {self.step}, "
                              f"got {value!r}")
        return value

    def values(self) -> int:
        return self.count

    def to_json(self) -> dict[str, Any]:
        return {"int": [self.low, self.high], "step": self.step}

    def describe(self) -> str:
        return f"{self.low}..{self.high}" + (f"/{self.step}" if self.step != 1 else "")


@dataclass(frozen=True)
class ChoiceGene:
    options: tuple[Value, ...]

    def draw(self, rng: random.Random) -> Value:
        return rng.choice(self.options)

    def mutate(self, value: Any, rng: random.Random) -> Value:
        others = [v for v in self.options if not _same(v, value)]
        return rng.choice(others) if others else value

    def check(self, value: Any, path: str) -> Value:
        if not any(_same(v, value) for v in self.options):
            raise GenomeError(f"{path}: expected one of {list(self.options)}, got {value!r}")
        return value

    def values(self) -> int:
        return len(self.options)

    def to_json(self) -> dict[str, Any]:
        return {"choice": list(self.options)}

    def describe(self) -> str:
        return ",".join(str(v) for v in self.options)


Gene = Union[FloatGene, IntGene, ChoiceGene]
Genes = Mapping[str, Gene]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


# ----- declarations ------------------------------------------------------------------------

SPEC_FORMS = ("'LOW..HIGH' (a float; an int where both are ints), 'log:LOW..HIGH', 'LOW..HIGH/STEP' (ints) "
              "or 'A,B,C' (a choice)")


def parse_gene(spec: Any, path: str) -> Gene:
    """One declaration, JSON form or one-line form; GenomeError naming ``path`` and the bad value."""
    if isinstance(spec, Gene.__args__):  # type: ignore[attr-defined]
        return spec
    if isinstance(spec, str):
        return _parse_line(spec, path)
    if not isinstance(spec, Mapping):
        raise GenomeError(f"{path}: expected a table such as {{float = [0.001, 0.3], log = true}}, "
                          f"{{int = [16, 128], step = 16}} or {{choice = [\"sgd\", \"adam\"]}}, or a line "
                          f"{SPEC_FORMS}; got {spec!r}")
    kinds = [k for k in ("float", "int", "choice") if k in spec]
    if len(kinds) != 1:
        raise GenomeError(f"{path}: name exactly one of 'float', 'int' or 'choice', got {dict(spec)!r}")
    kind = kinds[0]
    allowed = {"float": ("float", "log"), "int": ("int", "step"), "choice": ("choice",)}[kind]
    for key in spec:
        if key not in allowed:
            raise GenomeError(f"{path}.{key}: unknown for a {kind} gene (expected {list(allowed)})")
    if kind == "choice":
        return _choice(spec["choice"], path)
    bounds = spec[kind]
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
        raise GenomeError(f"{path}.{kind}: expected [low, high], got {bounds!r}")
    if kind == "float":
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise GenomeError(f"{path}.log: expected true or false, got {log!r}")
        return _float(bounds[0], bounds[1], log, path)
    return _int(bounds[0], bounds[1], spec.get("step", 1), path)


def _float(low: Any, high: Any, log: bool, path: str) -> FloatGene:
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise GenomeError(f"{path}: the range's ends must be finite numbers, got {value!r}")
    if low > high:
        raise GenomeError(f"{path}: low {low!r} exceeds high {high!r}")
    if log and low <= 0:
        raise GenomeError(f"{path}: a log-scaled range must be above 0, got low {low!r}")
    return FloatGene(float(low), float(high), log)


def _int(low: Any, high: Any, step: Any, path: str) -> IntGene:
    for value in (low, high, step):
        if isinstance(value, bool) or not isinstance(value, int):
            raise GenomeError(f"{path}: an int gene's low, high and step must be ints, got {value!r}")
    if low > high:
        raise GenomeError(f"{path}: low {low!r} exceeds high {high!r}")
    if step < 1 or (high - low) % step:
        raise GenomeError(f"{path}: step {step!r} must be >= 1 and divide high - low ({high - low})")
    return IntGene(low, high, step)


def _choice(options: Any, path: str) -> ChoiceGene:
    if not isinstance(options, (list, tuple)) or not options:
        raise GenomeError(f"{path}.choice: expected a non-empty list of values, got {options!r}")
    seen: list[Any] = []
    for value in options:
        if not isinstance(value, (bool, int, float, str)) or (isinstance(value, float) and not math.isfinite(value)):
            raise GenomeError(f"{path}.choice: values must be strings, numbers or booleans, got {value!r}")
        if any(_same(value, s) for s in seen):
            raise GenomeError(f"{path}.choice: {value!r} is listed twice")
        seen.append(value)
    return ChoiceGene(tuple(options))


_RANGE = re.compile(r"(?P<log>log:)?(?P<low>[^.][^/]*?)\.\.(?P<high>[^/]+?)(?:/(?P<step>.+))?")


def _parse_line(text: str, path: str) -> Gene:
    line = text.strip()
    match = _RANGE.fullmatch(line)
    if match is None:
        if ".." in line or not line:
            raise GenomeError(f"{path}: expected {SPEC_FORMS}; got {text!r}")
        return _choice([_scalar(part.strip()) for part in line.split(",")], path)
    low, high = _number(match["low"], path, text), _number(match["high"], path, text)
    if match["step"] is not None or (isinstance(low, int) and isinstance(high, int) and not match["log"]):
        step = _number(match["step"], path, text) if match["step"] is not None else 1
        return _int(low, high, step, path)
    return _float(low, high, bool(match["log"]), path)


def _number(text: str, path: str, line: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise GenomeError(f"{path}: {text.strip()!r} is not a number in {line!r}; expected {SPEC_FORMS}") \
                from None


def _scalar(text: str) -> Value:
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
            return value if math.isfinite(value) else text
        except ValueError:
            return text


def parse_hparams(declared: Mapping[str, Any] | None, path: str = "hparams") -> dict[str, Gene]:
    """Every gene of a declaration, in its order; GenomeError names the gene and the bad value."""
    if declared is None:
        return {}
    if not isinstance(declared, Mapping):
        raise GenomeError(f"{path}: expected a table of genes (name = spec), got {declared!r}")
    genes = {}
    for name, spec in declared.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise GenomeError(f"{path}: gene name {name!r} must be an identifier (letters, digits, _)")
        genes[name] = parse_gene(spec, f"{path}.{name}")
    return genes


def parse_hparam_line(text: str) -> tuple[str, Gene]:
    """``NAME=SPEC`` as given to ``--hparam``."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not NAME.fullmatch(name):
        raise GenomeError(f"--hparam: expected NAME=SPEC with SPEC {SPEC_FORMS}; got {text!r}")
    return name, parse_gene(spec, f"hparams.{name}")


def hparams_json(genes: Genes) -> dict[str, Any]:
    return {name: gene.to_json() for name, gene in genes.items()}


# ----- values ------------------------------------------------------------------------------


def draw_values(genes: Genes, rng: random.Random) -> dict[str, Value]:
    return {name: gene.draw(rng) for name, gene in genes.items()}


def check_values(genes: Genes, values: Mapping[str, Any], path: str = "hparams") -> dict[str, Value]:
    """``values`` against the declaration: every declared gene present, none other, each in range."""
    for name in values:
        if name not in genes:
            raise GenomeError(f"{path}.{name}: not a declared gene (declared: {sorted(genes)})")
    missing = [name for name in genes if name not in values]
    if missing:
        raise GenomeError(f"{path}.{missing[0]}: missing (every declared gene has a value)")
    return {name: gene.check(values[name], f"{path}.{name}") for name, gene in genes.items()}


def parse_values(data: Any, path: str = "hparams") -> dict[str, Value]:
    """A genome JSON's ``hparams`` object: names to scalar values (checked against no declaration)."""
    if not isinstance(data, Mapping):
        raise GenomeError(f"{path}: expected an object of gene values, got {data!r}")
    for name, value in data.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise GenomeError(f"{path}: gene name {name!r} must be an identifier")
        if not isinstance(value, (bool, int, float, str)) or (isinstance(value, float) and not math.isfinite(value)):
            raise GenomeError(f"{path}.{name}: expected a string, number or boolean, got {value!r}")
    return dict(data)


def mutate_values(genes: Genes, values: Mapping[str, Value], rng: random.Random
                  ) -> tuple[dict[str, Value], dict[str, dict[str, Value]]]:
    """Each mutable gene changes with probability 1/m, at least one; the new values and the changes
    (``{name: {"old": ..., "new": ...}}``)."""
    mutable = [name for name, gene in genes.items() if gene.values() > 1]
    if not mutable:
        return dict(values), {}
    chosen = [name for name in mutable if rng.random() < 1 / len(mutable)] or [rng.choice(mutable)]
    new, changes = dict(values), {}
    for name in chosen:
        new[name] = genes[name].mutate(values[name], rng)
        changes[name] = {"old": values[name], "new": new[name]}
    return new, changes


def cross_values(a: Mapping[str, Value], b: Mapping[str, Value], rng: random.Random
                 ) -> tuple[dict[str, Value], dict[str, Value]]:
    """Uniform crossover: each gene from either parent with probability 1/2; the children are complements."""
    first, second = {}, {}
    for name in a:
        take = rng.random() < 0.5
        first[name], second[name] = (a[name], b[name]) if take else (b[name], a[name])
    return first, second


G = TypeVar("G")


def mutate_parts(genome: G, arch: Callable[[], tuple[G, Mutation]] | None, genes: Genes, values: Mapping[str, Value],
                 rng: random.Random, rebuild: Callable[[G, dict[str, Value]], G]) -> tuple[G, Mutation]:
    """A mutation of ``genome``, which has genes: its architecture (``arch()``), its genes, or both, one
    of the three uniformly; with no mutable genes, the architecture alone (as before genes existed).
    A genome with no architecture to mutate (``arch is None``: a fixed network) mutates its genes.

    ``rebuild(genome, values)`` puts new gene values into a genome. The mutation is the architecture's
    (named as before) with the gene changes added as ``params["hparams"]``, or ``alter-hparams``."""
    if not any(gene.values() > 1 for gene in genes.values()):
        return arch() if arch is not None else (genome, Mutation("identity"))
    part = "genes" if arch is None else rng.choice(("architecture", "genes", "both"))
    if part == "architecture":
        return arch()
    new_values, changes = mutate_values(genes, values, rng)
    if part == "genes":
        return rebuild(genome, new_values), Mutation("alter-hparams", {"hparams": changes})
    child, mutation = arch()
    return rebuild(child, new_values), Mutation(mutation.name, {**mutation.params, "hparams": changes})


def OPTIONAL_GENES(data: Mapping[str, Any]) -> tuple[str, ...]:  # noqa: N802 - reads as a key list
    """``("hparams",)`` where a genome JSON carries genes (kinds that omit the key when they carry none)."""
    return ("hparams",) if "hparams" in data else ()


def format_values(values: Mapping[str, Any]) -> str:
    """Gene values for people: ``learning_rate 0.1, optimizer adam``."""
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def genes_of(genome: Any) -> dict[str, Value]:
    """The gene values ``genome`` carries (``genes()``, optional in the protocol); {} for a kind without."""
    genes = getattr(genome, "genes", None)
    return dict(genes()) if callable(genes) else {}


def genes_hash(arch_hash: str, values: Mapping[str, Value]) -> str:
    """An architecture's hash extended by its genes' values (unchanged where there are none)."""
    if not values:
        return arch_hash
    text = arch_hash + json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
