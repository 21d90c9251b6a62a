"""The NAS-Bench-201 cell (Dong & Yang, ICLR 2020): six edges, one of five operations each.

The cell has four nodes; node 0 is the cell's input and node 3 its output. Each of the six
edges i -> j (i < j) carries one operation, and node j is the sum over its incoming edges of
op(node i). The edges are kept in the benchmark's order, the order of its string form:

    (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)
    |nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|

so 5^6 = 15,625 cells make the whole space, every one of them a row of the benchmark's table.
The same cell is stacked into the benchmark's fixed skeleton (``genomes.nb201.net``): a stem,
three stages of ``cells`` cells at C, 2C and 4C channels joined by two residual reduction blocks,
then batch norm, ReLU, global average pooling and a linear classifier.

Only the convolutions hold parameters or cost FLOPs (pooling, identity and zero are free as
torch counts them), so a cell's cost is fixed by how many 3x3 and 1x1 edges it has; the
cost functions below rely on that, and a cell without convolutions is the cheapest there is.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

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

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (source, target)
NODES = 4  # node 0 the cell's input, node 3 its output
CONV_KERNELS: dict[str, int] = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}  # ReLU -> conv -> batch norm
STEM_KERNEL = 3
DEFAULT_CHANNELS = 16  # the benchmark's C
DEFAULT_CELLS = 5  # the benchmark's N, cells per stage
STAGES = 3  # at C, 2C, 4C channels; a reduction block between consecutive stages
OPTION_KEYS = ("channels", "cells")
SPACE_SIZE = len(OPS) ** len(EDGES)  # 15,625
INITIAL_TRIES = 100  # uniform draws before drawing from the enumerated admissible cells instead
MUTATE_TRIES = 10  # edge changes tried before a mutation gives up and returns the parent


# ---------------------------------------------------------------------------- the string form


def format_arch(ops: Sequence[str]) -> str:
    """The benchmark's string of six ops in edge order: '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'."""
    nodes = []
    for target in range(1, NODES):
        tokens = [f"{ops[e]}~{source}" for e, (source, t) in enumerate(EDGES) if t == target]
        nodes.append("|" + "|".join(tokens) + "|")
    return "+".join(nodes)


def parse_arch(arch: Any, path: str = "arch") -> tuple[str, ...]:
    """The six ops of a benchmark string, in edge order; strict, as the benchmark writes it.

    Each node's edges must appear with their sources in ascending order (0, then 1, then 2),
    which is how the benchmark's own ``tostr`` writes every row of its table; anything else
    (spaces, a missing or extra edge, a wrong source, an unknown op) raises a GenomeError
    that quotes the string and says what is wrong.
    """
    if not isinstance(arch, str):
        raise GenomeError(f"{path}: expected the benchmark's string '|op~0|+|op~0|op~1|+...', got {arch!r}")
    parts = arch.split("+")
    if len(parts) != NODES - 1:
        raise GenomeError(f"{path} {arch!r}: expected {NODES - 1} nodes joined by '+', got {len(parts)}")
    ops: list[str] = []
    for target, part in enumerate(parts, start=1):
        if len(part) < 2 or not part.startswith("|") or not part.endswith("|"):
            raise GenomeError(f"{path} {arch!r}: node {target} must be written '|op~i|...|', got {part!r}")
        tokens = part[1:-1].split("|")
        if len(tokens) != target:
            raise GenomeError(f"{path} {arch!r}: node {target} takes {target} edges (from nodes "
                              f"0..{target - 1}), got {len(tokens)} in {part!r}")
        for source, token in enumerate(tokens):
            op, tilde, index = token.partition("~")
            if not tilde:
                raise GenomeError(f"{path} {arch!r}: edge {token!r} of node {target} must be 'op~{source}'")
            if index != str(source):
                raise GenomeError(f"{path} {arch!r}: edge {token!r} of node {target} must come from node "
                                  f"{source} (edges in source order), got source {index!r}")
            if op not in OPS:
                raise GenomeError(f"{path} {arch!r}: unknown op {op!r} in edge {token!r}; known: {list(OPS)}")
            ops.append(op)
    return tuple(ops)


def all_cells() -> Iterator[tuple[str, ...]]:
    """Every cell of the space (15,625), as op tuples in edge order."""
    return itertools.product(OPS, repeat=len(EDGES))


# ---------------------------------------------------------------------------- costs


def stage_channels(channels: int) -> tuple[int, ...]:
    """Channels of the three stages: C, 2C, 4C."""
    return tuple(channels * 2**s for s in range(STAGES))


def edge_params(op: str, channels: int) -> int:
    """An edge's parameters: a bias-free convolution and its batch norm's scale and shift; else none."""
    k = CONV_KERNELS.get(op)
    return 0 if k is None else k * k * channels * channels + 2 * channels


def edge_flops(op: str, channels: int, height: int, width: int) -> int:
    """An edge's FLOPs as torch counts them: 2 per multiply-add of its convolution (stride 1, same size)."""
    k = CONV_KERNELS.get(op)
    return 0 if k is None else 2 * height * width * k * k * channels * channels


def reduction_params(in_channels: int, out_channels: int) -> int:
    """A residual reduction block: two 3x3 ReLU-conv-BNs and the shortcut's 1x1 convolution."""
    conv_a = 9 * in_channels * out_channels + 2 * out_channels
    conv_b = 9 * out_channels * out_channels + 2 * out_channels
    return conv_a + conv_b + in_channels * out_channels


def reduced(size: int) -> int:
    """A side after a reduction block: a 3x3 stride-2 convolution padded by 1 gives ceil(size / 2)."""
    return -(-size // 2)


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Nb201Options:
    """The NAS-Bench-201 settings read from ``SearchSpace.options`` (the skeleton, not the cell)."""

    channels: int = DEFAULT_CHANNELS
    cells: int = DEFAULT_CELLS



def parse_options(options: Mapping[str, Any]) -> Nb201Options:
    """Validate ``SearchSpace.options`` for this kind, filling in the benchmark's C = 16, N = 5."""
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise GenomeError(f"options.{unknown[0]}: unknown NAS-Bench-201 option; known: {list(OPTION_KEYS)}")
    return Nb201Options(
        channels=check_int(options.get("channels", DEFAULT_CHANNELS), "options.channels", 1),
        cells=check_int(options.get("cells", DEFAULT_CELLS), "options.cells", 1),
    )


def _check_ops(ops: Any, path: str) -> tuple[str, ...]:
    if not isinstance(ops, (list, tuple)) or len(ops) != len(EDGES):
        raise GenomeError(f"{path}: expected a list of {len(EDGES)} ops (one per edge, in the benchmark's "
                          f"order), got {ops!r}")
    for i, op in enumerate(ops):
        if not isinstance(op, str) or op not in OPS:
            raise GenomeError(f"{path}[{i}]: expected one of {list(OPS)}, got {op!r}")
    return tuple(ops)



# ---------------------------------------------------------------------------- the genome


@dataclass(frozen=True)
class NB201:
    """A NAS-Bench-201 individual: the cell's six ops in edge order, and the skeleton it sits in.

    ``channels`` and ``cells`` (the benchmark's C and N) come from the space's options when a
    genome is drawn and pass unchanged to every descendant; they are part of the genome because
    building the network and counting its parameters need them, and the protocol gives those no
    space.
    """

    ops: tuple[str, ...]
    channels: int = DEFAULT_CHANNELS
    cells: int = DEFAULT_CELLS
    hparams: Mapping[str, Any] = field(default_factory=dict, hash=False)

    kind: ClassVar[str] = "nb201"
    supports_crossover: ClassVar[bool] = True
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", _check_ops(self.ops, "ops"))
        check_int(self.channels, "channels", 1)
        check_int(self.cells, "cells", 1)

    # -- the string form

    @classmethod
    def from_string(cls, arch: str, channels: int = DEFAULT_CHANNELS, cells: int = DEFAULT_CELLS) -> NB201:
        """The genome of a benchmark string (see ``parse_arch``)."""
        return cls(parse_arch(arch), channels, cells)

    def to_string(self) -> str:
        """The benchmark's string of this cell, the key of its table."""
        return format_arch(self.ops)

    # -- creation and variation

    @classmethod
    def sample(cls, rng: random.Random, space: SearchSpace) -> NB201:
        """A uniform draw from the cells the space's bounds admit (every cell, unless bounds bind).

        Each edge is an independent uniform draw over the five ops, redrawn while the cell breaks
        a bound; after ``INITIAL_TRIES`` draws, one of the admissible cells is picked uniformly
        from their enumeration, so a tight bound still gets a uniform member, not a fixed one.
        Raises GenomeError naming the bound when even a convolution-free cell (the cheapest)
        does not fit. The declared genes (``space.hparams``) are drawn after the cell.
        """
        return replace(cls._sample_cell(rng, space), hparams=draw_values(space.hparams, rng))

    @classmethod
    def _sample_cell(cls, rng: random.Random, space: SearchSpace) -> NB201:
        opts = parse_options(space.options)
        cheapest = cls(("none",) * len(EDGES), opts.channels, opts.cells)
        if not space.admits(cheapest):
            smallest = (f"{cheapest.param_count(space.input_shape, space.num_classes):,} parameters, "
                        f"{cheapest.flops(space.input_shape, space.num_classes):,} FLOPs")
            raise GenomeError(f"{space.bounds()}: below the smallest network of this space ({smallest})")
        for _ in range(INITIAL_TRIES):
            genome = cls(tuple(rng.choice(OPS) for _ in EDGES), opts.channels, opts.cells)
            if space.admits(genome):
                return genome
        return cls(rng.choice(cheapest.admissible(space)), opts.channels, opts.cells)

    @classmethod
    def initial(cls, rng: random.Random, space: SearchSpace) -> NB201:
        """A member of the initial population: a uniform draw (``sample``), as the benchmark's searches start."""
        return cls.sample(rng, space)

    def admissible(self, space: SearchSpace) -> list[tuple[str, ...]]:
        """Every cell (in enumeration order) that fits ``space`` in this genome's skeleton.

        A cell's cost depends only on its counts of 3x3 and 1x1 edges, so one genome per count
        pair is checked against the bounds instead of all 15,625.
        """
        fits: dict[tuple[int, int], bool] = {}
        chosen = []
        for ops in all_cells():
            key = (ops.count("nor_conv_3x3"), ops.count("nor_conv_1x1"))
            if key not in fits:
                fits[key] = space.admits(replace(self, ops=ops))
            if fits[key]:
                chosen.append(ops)
        return chosen

    def mutate(self, rng: random.Random, space: SearchSpace) -> tuple[NB201, Mutation]:
        """The cell, the genes or both (``genomes.hparams.mutate_parts``)."""
        return mutate_parts(self, lambda: self._mutate_edge(rng, space), space.hparams, self.hparams, rng,
                            lambda genome, values: replace(genome, hparams=values))

    def _mutate_edge(self, rng: random.Random, space: SearchSpace) -> tuple[NB201, Mutation]:
        """The benchmark's regularized-evolution mutation: one edge, uniformly, to one of the other four ops.

        A child over the space's bounds is redrawn up to ``MUTATE_TRIES`` times; then the parent
        is returned with an "identity" mutation saying which bound it broke.
        """
        child = self
        for _ in range(MUTATE_TRIES):
            edge = rng.randrange(len(EDGES))
            old = self.ops[edge]
            new = rng.choice([op for op in OPS if op != old])
            child = self.with_edge(edge, new)
            if space.admits(child):
                return child, Mutation("edge", {"edge": edge, "from": old, "to": new})
        return self, Mutation("identity", {"reason": child.over(space)})

    def crossover(self, other: NB201, rng: random.Random, space: SearchSpace) -> tuple[NB201, NB201, Mutation]:
        """Uniform crossover: each edge's op is swapped between the parents with probability 1/2.

        The children are complementary (edge by edge, one holds what the other does not). Where
        either breaks the space's bounds the parents come back with an "identity" mutation.
        """
        if not isinstance(other, NB201):
            raise GenomeError(f"crossover: expected an nb201 partner, got {type(other).__name__}")
        if (self.channels, self.cells) != (other.channels, other.cells):
            raise GenomeError(f"crossover: skeletons differ, (channels, cells) ({self.channels}, {self.cells}) "
                              f"vs ({other.channels}, {other.cells})")
        swapped = [e for e in range(len(EDGES)) if rng.random() < 0.5]
        a = replace(self, ops=tuple(o if e in swapped else m for e, (m, o) in enumerate(zip(self.ops, other.ops))))
        b = replace(other, ops=tuple(m if e in swapped else o for e, (m, o) in enumerate(zip(self.ops, other.ops))))
        for child in (a, b):
            if not space.admits(child):
                return self, other, Mutation("identity", {"reason": child.over(space)})
        if self.hparams:
            genes_a, genes_b = cross_values(self.hparams, other.hparams, rng)
            a, b = replace(a, hparams=genes_a), replace(b, hparams=genes_b)
        return a, b, Mutation("crossover", {"swapped_edges": swapped})

    def with_edge(self, edge: int, op: str) -> NB201:
        """This genome with edge ``edge`` (0..5, the benchmark's order) set to ``op``."""
        if isinstance(edge, bool) or not isinstance(edge, int) or not 0 <= edge < len(EDGES):
            raise GenomeError(f"edge: expected an index 0..{len(EDGES) - 1}, got {edge!r}")
        return replace(self, ops=self.ops[:edge] + (op,) + self.ops[edge + 1 :])

    def over(self, space: SearchSpace) -> str:
        """Which bound a genome that does not fit breaks, for the mutation record."""
        too_big = self.param_count(space.input_shape, space.num_classes) > space.max_params
        return "over max_params" if too_big else "over max_flops"

    # -- decoding

    def to_module(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        from genomes.nb201.net import NB201Net  # torch only where a network is built

        return NB201Net(self.ops, input_shape[0], num_classes, self.channels, self.cells)

    def inherit(self, module: nn.Module, parent_state: Mapping[str, Any], mutation: Mutation | None) -> Inheritance:
        """Every tensor whose position and shape survive.

        Edge layers are keyed by cell, edge and op ("cells.3.edges.4.nor_conv_3x3.conv.weight"),
        so a changed edge starts fresh (its batch norm included) and every other edge, the stem,
        the reduction blocks and the classifier keep their trained weights.
        """
        return inherit_weights(module, parent_state)

    def param_count(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        """Exact, without torch; the spatial size never matters thanks to global average pooling."""
        in_channels = input_shape[0]
        widths = stage_channels(self.channels)
        total = STEM_KERNEL * STEM_KERNEL * in_channels * widths[0] + 2 * widths[0]
        for s, c in enumerate(widths):
            total += self.cells * sum(edge_params(op, c) for op in self.ops)
            if s + 1 < len(widths):
                total += reduction_params(c, widths[s + 1])
        last = widths[-1]
        return total + 2 * last + last * num_classes + num_classes

    def flops(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        """The stem, each stage's convolution edges at its resolution, the reduction blocks, the head.

        A reduction block's three convolutions all produce ceil(H / 2) x ceil(W / 2) maps.
        """
        in_channels, h, w = input_shape
        widths = stage_channels(self.channels)
        total = 2 * h * w * STEM_KERNEL * STEM_KERNEL * in_channels * widths[0]
        for s, c in enumerate(widths):
            total += self.cells * sum(edge_flops(op, c, h, w) for op in self.ops)
            if s + 1 < len(widths):
                out, h, w = widths[s + 1], reduced(h), reduced(w)
                total += 2 * h * w * (9 * c * out + 9 * out * out + c * out)
        return total + 2 * widths[-1] * num_classes

    def learning_rate(self) -> float | None:
        return None

    def genes(self) -> dict[str, Any]:
        return dict(self.hparams)

    # -- structure

    def cell_depth(self) -> int | None:
        """Convolutions on the deepest path from the cell's input to its output through live edges.

        "none" edges carry nothing, so they are no path; None where no path reaches node 3 (the
        cell outputs zeros, whatever its input).
        """
        depth: dict[int, int] = {0: 0}
        for e, (source, target) in enumerate(EDGES):  # edges come in target order: a topological order
            op = self.ops[e]
            if op == "none" or source not in depth:
                continue
            step = depth[source] + (op in CONV_KERNELS)
            depth[target] = max(depth.get(target, step), step)
        return depth.get(NODES - 1)

    # -- serialisation and views

    def to_json(self) -> dict[str, Any]:
        data = {"kind": self.kind, "version": self.version, "edges": list(self.ops),
                "channels": self.channels, "cells": self.cells}
        return {**data, "hparams": dict(self.hparams)} if self.hparams else data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NB201:
        if not isinstance(data, Mapping):
            raise GenomeError(f"nb201 genome JSON must be an object, got {type(data).__name__}")
        check_keys(data, ("kind", "version", "edges", "channels", "cells") + OPTIONAL_GENES(data))
        if data["kind"] != cls.kind:
            raise GenomeError(f"kind: expected {cls.kind!r}, got {data['kind']!r}")
        if isinstance(data["version"], bool) or data["version"] != cls.version:
            raise GenomeError(f"version: expected {cls.version}, got {data['version']!r}")
        return cls(_check_ops(data["edges"], "edges"), check_int(data["channels"], "channels", 1),
                   check_int(data["cells"], "cells", 1), parse_values(data.get("hparams", {})))

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of kind, ops (edge order), channels and cells.

        Equal cells in equal skeletons hash equal; cells that are merely isomorphic (or compute
        alike, e.g. a "none" edge into an unused node) hash differently, as the benchmark's own
        table keeps them as separate rows. The skeleton is included because a cell at other
        channels or depth is another network.
        """
        canon = {"kind": self.kind, "ops": list(self.ops), "channels": self.channels, "cells": self.cells}
        text = json.dumps(canon, sort_keys=True, separators=(",", ":"))
        return genes_hash(hashlib.sha256(text.encode()).hexdigest(), self.hparams)

    def describe(self) -> str:
        """'nb201: <the benchmark string>', plus the skeleton where it is not the benchmark's."""
        skeleton = "" if (self.channels, self.cells) == (DEFAULT_CHANNELS, DEFAULT_CELLS) else \
            f" (channels {self.channels}, cells {self.cells})"
        return f"nb201: {self.to_string()}{skeleton}"

    def stats(self, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, int | float | str]:
        """Edge counts by op, params, and depth: convolutions on the network's deepest path.

        ``depth`` counts the stem, each cell's deepest live path (``cell_depth``; 0 where the cell
        is dead) and the two 3x3 convolutions of each reduction block; ``connected`` is 1 where
        the cell's input reaches its output through non-"none" edges.
        """
        cell_depth = self.cell_depth()
        return {
            "convs": sum(op in CONV_KERNELS for op in self.ops),
            "conv3x3": self.ops.count("nor_conv_3x3"),
            "conv1x1": self.ops.count("nor_conv_1x1"),
            "skips": self.ops.count("skip_connect"),
            "pools": self.ops.count("avg_pool_3x3"),
            "nones": self.ops.count("none"),
            "connected": int(cell_depth is not None),
            "cell_depth": cell_depth or 0,
            "params": self.param_count(input_shape, num_classes),
            "depth": 1 + STAGES * self.cells * (cell_depth or 0) + 2 * (STAGES - 1),
            **self.hparams,
        }
