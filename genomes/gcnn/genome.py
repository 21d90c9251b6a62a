"""Genetic CNN (Xie & Yuille 2017): a network written as a fixed-length bitstring.

The network is S stages separated by 2x2 max pooling. Stage s has K_s ordinary nodes,
each a 3x3 convolution + batch norm + ReLU over the element-wise sum of its inputs, plus
a default input node (0) and a default output node (K_s + 1) that the code never names.
For node j = 2..K_s the code holds one bit per predecessor i = 1..j-1 ("1" means i -> j);
the bits are written grouped per node, e.g. K = 4 -> "1-00-111".

Nodes without predecessors read the input node, nodes without successors feed the output
node, and isolated nodes (no edge at all) are dropped, as the paper does; a stage whose
nodes are all isolated is the input node joined straight to the output node, which the
network builds as a single convolution (the input node's).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from genomes.base import (
    GenomeError,
    Inheritance,
    Mutation,
    SearchSpace,
    check_int,
    check_keys,
    inherit_weights,
)
from genomes.hparams import OPTIONAL_GENES, cross_values, draw_values, genes_hash, mutate_parts, parse_values

if TYPE_CHECKING:
    from torch import nn

KERNEL = 3
DROPOUT = 0.5
DEFAULT_NODES = (3, 4, 5)  # the paper's CIFAR setting; (3, 5) was its MNIST setting
PAPER_CHANNELS = {3: (8, 16, 32), 2: (20, 50)}  # the paper's filters per stage (CIFAR, MNIST)
DEFAULT_Q_M = 0.05  # per-bit flip probability (paper, CIFAR)
DEFAULT_Q_C = 0.2  # per-stage swap probability in crossover (paper, CIFAR)
OPTION_KEYS = ("nodes", "channels", "q_m", "q_c")
INITIAL_TRIES = 100  # resamples before falling back to an all-zeros code within the bounds

Edge = tuple[int, int]


# ---------------------------------------------------------------------------- the code


def bit_count(nodes: int) -> int:
    """Bits encoding a stage of ``nodes`` ordinary nodes: 1 + 2 + ... + (K - 1)."""
    return nodes * (nodes - 1) // 2


def bit_index(i: int, j: int) -> int:
    """Position (0-based, dashes removed) of the bit for edge i -> j, 1 <= i < j <= K."""
    return (j - 1) * (j - 2) // 2 + (i - 1)


def group_code(bits: str) -> str:
    """Insert the paper's dashes: '100111' -> '1-00-111' (node j gets j - 1 bits)."""
    groups, start, size = [], 0, 1
    while start < len(bits):
        groups.append(bits[start : start + size])
        start, size = start + size, size + 1
    return "-".join(groups)


def parse_code(code: Any, nodes: int, path: str = "code") -> str:
    """The plain bits of a grouped code, checked against the node count."""
    if not isinstance(code, str):
        raise GenomeError(f"{path}: expected a string of 0/1 grouped by dashes, got {code!r}")
    bad = sorted(set(code) - set("01-"))
    if bad:
        raise GenomeError(f"{path}: only '0', '1' and '-' allowed, got {bad[0]!r} in {code!r}")
    bits = code.replace("-", "")
    if len(bits) != bit_count(nodes):
        raise GenomeError(f"{path}: expected {bit_count(nodes)} bits for {nodes} nodes, got {code!r}")
    expected = group_code(bits)
    if code != expected:
        raise GenomeError(f"{path}: wrong grouping, expected {expected!r} (node j: j-1 bits), got {code!r}")
    return bits


def _plain_bits(code: str, nodes: int) -> str:
    """Accept a code with or without dashes (the pure helpers below take either)."""
    bits = code.replace("-", "")
    return parse_code(group_code(bits), nodes)


def _coded_edges(bits: str, nodes: int) -> set[Edge]:
    """Edges between ordinary nodes that the bits switch on."""
    return {(i, j) for j in range(2, nodes + 1) for i in range(1, j) if bits[bit_index(i, j)] == "1"}


def active_nodes(code: str, nodes: int) -> set[int]:
    """Ordinary nodes that survive decoding: those touching at least one coded edge."""
    return {n for edge in _coded_edges(_plain_bits(code, nodes), nodes) for n in edge}


def stage_connections(code: str, nodes: int) -> set[Edge]:
    """Every edge of the decoded stage, the default input (0) and output (K+1) nodes included."""
    coded = _coded_edges(_plain_bits(code, nodes), nodes)
    active = {n for edge in coded for n in edge}
    if not active:
        return {(0, nodes + 1)}
    with_pred = {j for _, j in coded}
    with_succ = {i for i, _ in coded}
    return coded | {(0, k) for k in active - with_pred} | {(k, nodes + 1) for k in active - with_succ}


def predecessors(edges: set[Edge]) -> dict[int, tuple[int, ...]]:
    """For each node with inputs, its predecessors in ascending order."""
    preds: dict[int, list[int]] = {}
    for i, j in sorted(edges):
        preds.setdefault(j, []).append(i)
    return {j: tuple(p) for j, p in preds.items()}


def longest_path(edges: set[Edge], nodes: int) -> int:
    """Convolutions on the longest input -> output path (node numbers are a topological order).

    A stage without ordinary nodes is one convolution: its input and output node are one layer.
    """
    if edges == {(0, nodes + 1)}:
        return 1
    depth = {0: 1}
    for j, preds in sorted(predecessors(edges).items()):
        depth[j] = 1 + max(depth[i] for i in preds)
    return depth[nodes + 1]


def stage_of(key: str) -> int | None:
    """The stage a state-dict key of the decoded network belongs to ("stages.2.nodes.3.conv.weight" -> 2).

    None for the classifier head, which belongs to no stage.
    """
    parts = key.split(".")
    if len(parts) > 2 and parts[0] == "stages" and parts[1].isdigit():
        return int(parts[1])
    return None


def conv_params(in_channels: int, out_channels: int) -> int:
    """One node: bias-free 3x3 convolution (batch norm follows) + batch-norm scale and shift."""
    return KERNEL * KERNEL * in_channels * out_channels + 2 * out_channels


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True)
class GcnnOptions:
    """The Genetic-CNN settings read from ``SearchSpace.options``."""

    nodes: tuple[int, ...]
    channels: tuple[int, ...]
    q_m: float
    q_c: float


def default_channels(stages: int) -> tuple[int, ...]:
    """The paper's filters for 3 (CIFAR) or 2 (MNIST) stages; otherwise doubling from 16."""
    return PAPER_CHANNELS.get(stages, tuple(16 * 2**s for s in range(stages)))



def _int_tuple(value: Any, path: str, minimum: int) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise GenomeError(f"{path}: expected a non-empty list of ints, got {value!r}")
    return tuple(check_int(v, f"{path}[{i}]", minimum) for i, v in enumerate(value))


def _probability(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise GenomeError(f"{path}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def parse_options(options: Mapping[str, Any]) -> GcnnOptions:
    """Validate ``SearchSpace.options`` for this kind, filling in the paper's defaults."""
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise GenomeError(f"options.{unknown[0]}: unknown Genetic-CNN option; known: {list(OPTION_KEYS)}")
    nodes = _int_tuple(options.get("nodes", DEFAULT_NODES), "options.nodes", 2)
    if "channels" in options:
        channels = _int_tuple(options["channels"], "options.channels", 1)
    else:
        channels = default_channels(len(nodes))
    if len(channels) != len(nodes):
        raise GenomeError(f"options.channels: expected {len(nodes)} values (one per stage), got {channels}")
    q_m = _probability(options.get("q_m", DEFAULT_Q_M), "options.q_m")
    q_c = _probability(options.get("q_c", DEFAULT_Q_C), "options.q_c")
    return GcnnOptions(nodes=nodes, channels=channels, q_m=q_m, q_c=q_c)


# ---------------------------------------------------------------------------- the genome


@dataclass(frozen=True)
class Stage:
    """One stage: its node count, its channels, and its connection bits (no dashes)."""

    nodes: int
    channels: int
    bits: str

    def __post_init__(self) -> None:
        check_int(self.nodes, "nodes", 2)
        check_int(self.channels, "channels", 1)
        n = bit_count(self.nodes)
        if not isinstance(self.bits, str) or set(self.bits) - {"0", "1"} or len(self.bits) != n:
            raise GenomeError(f"bits: expected {n} bits of 0/1 for {self.nodes} nodes, got {self.bits!r}")

    @property
    def code(self) -> str:
        return group_code(self.bits)

    def edges(self) -> set[Edge]:
        return stage_connections(self.bits, self.nodes)

    def active(self) -> set[int]:
        return active_nodes(self.bits, self.nodes)

    def convs_after_input(self, version: int = 2) -> int:
        """Surviving nodes + output node; with no surviving node, none (version 1 kept the output node)."""
        active = len(self.active())
        return active + 1 if active or version == 1 else 0

    def param_count(self, in_channels: int, version: int = 2) -> int:
        """The input node's convolution and those after it."""
        c = self.channels
        return conv_params(in_channels, c) + self.convs_after_input(version) * conv_params(c, c)

    def with_bits(self, bits: str) -> Stage:
        return Stage(self.nodes, self.channels, bits)

    def to_json(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "channels": self.channels, "code": self.code}


def _stage_from_json(data: Any, path: str) -> Stage:
    if not isinstance(data, Mapping):
        raise GenomeError(f"{path}: expected an object with nodes, channels, code; got {data!r}")
    check_keys(data, ("nodes", "channels", "code"), path)
    nodes = check_int(data["nodes"], f"{path}.nodes", 2)
    channels = check_int(data["channels"], f"{path}.channels", 1)
    return Stage(nodes, channels, parse_code(data["code"], nodes, f"{path}.code"))



@dataclass(frozen=True)
class GeneticCNN:
    """A Genetic-CNN individual: an immutable tuple of stages.

    ``version`` 2 decodes a stage with no surviving node as the input node's convolution alone;
    version 1 (stores written before) also kept the output node's, and its genomes still decode
    so, with their children, so that an old store's weights load.
    """

    stages: tuple[Stage, ...]
    version: int = 2
    hparams: Mapping[str, Any] = field(default_factory=dict, hash=False)

    kind: ClassVar[str] = "gcnn"
    supports_crossover: ClassVar[bool] = True
    versions: ClassVar[tuple[int, ...]] = (1, 2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages or not all(isinstance(s, Stage) for s in self.stages):
            raise GenomeError(f"stages: expected a non-empty sequence of Stage, got {self.stages!r}")
        if isinstance(self.version, bool) or self.version not in self.versions:
            raise GenomeError(f"version: expected one of {list(self.versions)}, got {self.version!r}")

    # -- creation and variation

    @classmethod
    def initial(cls, rng: random.Random, space: SearchSpace) -> GeneticCNN:
        """Each bit Bernoulli(0.5), as the paper initialises; resampled to fit the space's bounds; then
        the declared genes (``space.hparams``) drawn at random."""
        return replace(cls._initial_stages(rng, space), hparams=draw_values(space.hparams, rng))

    @classmethod
    def _initial_stages(cls, rng: random.Random, space: SearchSpace) -> GeneticCNN:
        opts = parse_options(space.options)
        zeros = cls(tuple(Stage(k, c, "0" * bit_count(k)) for k, c in zip(opts.nodes, opts.channels)))
        if not zeros.fits(space):
            smallest = (f"{zeros.param_count(space.input_shape, space.num_classes):,} parameters, "
                        f"{zeros.flops(space.input_shape, space.num_classes):,} FLOPs")
            raise GenomeError(f"{space.bounds()}: below the smallest network of this space ({smallest})")
        for _ in range(INITIAL_TRIES):
            genome = cls(tuple(s.with_bits(_random_bits(rng, len(s.bits), 0.5)) for s in zeros.stages))
            if genome.fits(space):
                return genome
        return zeros

    @classmethod
    def sample(cls, rng: random.Random, space: SearchSpace) -> GeneticCNN:
        """A uniform draw from the space (``selection = "random"``): every bitstring is equally likely,
        as the initial population draws them."""
        return cls.initial(rng, space)

    def mutate(self, rng: random.Random, space: SearchSpace) -> tuple[GeneticCNN, Mutation]:
        """The bits, the genes or both (``genomes.hparams.mutate_parts``)."""
        return mutate_parts(self, lambda: self._flip(rng, space), space.hparams, self.hparams, rng,
                            lambda genome, values: replace(genome, hparams=values))

    def _flip(self, rng: random.Random, space: SearchSpace) -> tuple[GeneticCNN, Mutation]:
        """Flip each bit independently with probability q_m; flipped = [[stage, bit], ...]."""
        q_m = parse_options(space.options).q_m
        flipped: list[list[int]] = []
        stages = []
        for s, stage in enumerate(self.stages):
            bits = list(stage.bits)
            for b in range(len(bits)):
                if rng.random() < q_m:
                    bits[b] = "1" if bits[b] == "0" else "0"
                    flipped.append([s, b])
            stages.append(stage.with_bits("".join(bits)))
        child = replace(self, stages=tuple(stages))
        if not flipped:  # each bit flips with probability q_m: at times none does, and the child is its parent
            return self, Mutation("identity", {"reason": "no bit flipped"})
        if not child.fits(space):
            return self, Mutation("identity", {"reason": child.over(space)})
        return child, Mutation("bit-flip", {"flipped": flipped})

    def crossover(
        self, other: GeneticCNN, rng: random.Random, space: SearchSpace
    ) -> tuple[GeneticCNN, GeneticCNN, Mutation]:
        """Swap each stage between the two parents with probability q_c; then each gene, with probability
        1/2 (uniform crossover)."""
        if not isinstance(other, GeneticCNN):
            raise GenomeError(f"crossover: expected a gcnn partner, got {type(other).__name__}")
        if other.version != self.version:
            raise GenomeError(f"crossover: genome versions differ, {self.version} vs {other.version}")
        mine = [(s.nodes, s.channels) for s in self.stages]
        theirs = [(s.nodes, s.channels) for s in other.stages]
        if mine != theirs:
            raise GenomeError(f"crossover: stage structures differ, (nodes, channels) {mine} vs {theirs}")
        q_c = parse_options(space.options).q_c
        swapped = [s for s in range(len(self.stages)) if rng.random() < q_c]
        pairs = list(enumerate(zip(self.stages, other.stages)))
        a = replace(self, stages=tuple(o if s in swapped else m for s, (m, o) in pairs))
        b = replace(other, stages=tuple(m if s in swapped else o for s, (m, o) in pairs))
        if not (a.fits(space) and b.fits(space)):
            return self, other, Mutation("identity", {"reason": (a if not a.fits(space) else b).over(space)})
        if self.hparams:
            genes_a, genes_b = cross_values(self.hparams, other.hparams, rng)
            a, b = replace(a, hparams=genes_a), replace(b, hparams=genes_b)
        return a, b, Mutation("crossover", {"swapped_stages": swapped})

    def fits(self, space: SearchSpace) -> bool:
        return space.admits(self)

    def over(self, space: SearchSpace) -> str:
        """Which bound a genome that does not fit breaks, for the mutation record."""
        too_big = self.param_count(space.input_shape, space.num_classes) > space.max_params
        return "over max_params" if too_big else "over max_flops"

    # -- decoding

    def to_module(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        from genomes.gcnn.net import GeneticCNNNet  # torch only where a network is built

        return GeneticCNNNet(self.stages, input_shape[0], num_classes, self.version)

    def inherit(self, module: nn.Module, parent_state: Mapping[str, Any], mutation: Mutation | None) -> Inheritance:
        """Every tensor whose position and shape survive (the stage and node it belongs to)."""
        return inherit_weights(module, parent_state)

    def param_count(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        """Exact, without torch: spatial size never matters thanks to global average pooling."""
        total, in_channels = 0, input_shape[0]
        for stage in self.stages:
            total += stage.param_count(in_channels, self.version)
            in_channels = stage.channels
        return total + in_channels * num_classes + num_classes

    def flops(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        """Each stage's 3x3 convolutions at its resolution (halved, rounding up, by each pooling), the head."""
        (in_channels, h, w), total = input_shape, 0
        for stage in self.stages:
            convs = stage.convs_after_input(self.version)
            total += 2 * h * w * KERNEL * KERNEL * stage.channels * (in_channels + convs * stage.channels)
            in_channels, h, w = stage.channels, -(-h // 2), -(-w // 2)
        return total + 2 * in_channels * num_classes

    def learning_rate(self) -> float | None:
        return None

    def genes(self) -> dict[str, Any]:
        return dict(self.hparams)

    # -- serialisation and views

    def to_json(self) -> dict[str, Any]:
        data = {"kind": self.kind, "version": self.version, "stages": [s.to_json() for s in self.stages]}
        return {**data, "hparams": dict(self.hparams)} if self.hparams else data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GeneticCNN:
        if not isinstance(data, Mapping):
            raise GenomeError(f"gcnn genome JSON must be an object, got {type(data).__name__}")
        check_keys(data, ("kind", "version", "stages") + OPTIONAL_GENES(data), "")
        if data["kind"] != cls.kind:
            raise GenomeError(f"kind: expected {cls.kind!r}, got {data['kind']!r}")
        version = data["version"]
        if isinstance(version, bool) or version not in cls.versions:
            raise GenomeError(f"version: expected one of {list(cls.versions)}, got {version!r}")
        stages = data["stages"]
        if not isinstance(stages, (list, tuple)) or not stages:
            raise GenomeError(f"stages: expected a non-empty list, got {stages!r}")
        return cls(tuple(_stage_from_json(s, f"stages[{i}]") for i, s in enumerate(stages)), version,
                   parse_values(data.get("hparams", {})))

    def content_hash(self) -> str:
        """sha256 of (nodes, channels, effective edge set) per stage, in stage order.

        Two genomes hash equal exactly when every stage has the same node count, channels
        and decoded edges. Since a dropped isolated node carries no 1-bit, that is the same
        as equal codes; graphs that are merely isomorphic under relabelling of nodes hash
        differently, because their layers sit at different positions (state-dict keys). The
        version is left out: a run's genomes all share one (a child keeps its parent's). Genes, where
        declared, extend the hash (``genomes.hparams.genes_hash``).
        """
        canon = [{"nodes": s.nodes, "channels": s.channels, "edges": sorted(s.edges())} for s in self.stages]
        text = json.dumps({"kind": self.kind, "stages": canon}, sort_keys=True, separators=(",", ":"))
        return genes_hash(hashlib.sha256(text.encode()).hexdigest(), self.hparams)

    def describe(self) -> str:
        return f"gcnn: {len(self.stages)} stages " + " | ".join(s.code for s in self.stages)

    def stats(self, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, int | float | str]:
        """Stages, surviving nodes, decoded edges (defaults included), params, conv depth."""
        return {
            "stages": len(self.stages),
            "active_nodes": sum(len(s.active()) for s in self.stages),
            "connections": sum(len(s.edges()) for s in self.stages),
            "params": self.param_count(input_shape, num_classes),
            "depth": sum(longest_path(s.edges(), s.nodes) + (self.version == 1 and not s.active())
                         for s in self.stages),
            **self.hparams,
        }


def _random_bits(rng: random.Random, n: int, p: float) -> str:
    return "".join("1" if rng.random() < p else "0" for _ in range(n))
