"""The DNA graph genome of Real et al. 2017, "Large-Scale Evolution of Image Classifiers".

A DNA is a chain of vertices (tensors with an activation) joined by *backbone* edges
(convolutions or identities), plus identity *skip* edges from earlier to later vertices,
and the learning rate. Every vertex, edge and the classifier head carries an integer id
that names its torch parameters ("edges.e12.weight", "vertices.v3.bn.weight",
"head.h4.weight"), so a layer that a mutation leaves alone keeps its key and, where its
shape survives, its trained weights (see ``genomes.base.inherit_weights``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from genomes.base import GenomeError, Inheritance, Mutation, SearchSpace
from genomes.hparams import draw_values, format_values, genes_hash, mutate_parts, parse_values

if TYPE_CHECKING:
    from torch import nn

KIND = "dna"
VERSION = 1
ACTIVATIONS = ("linear", "bn_relu")
OPS = ("conv", "identity")
STRIDE_LIMIT = 8
INITIAL_LEARNING_RATE = 0.1
MAX_MUTATION_TRIES = 20

_TOP_KEYS = ("kind", "version", "hparams", "vertices", "edges", "head_id", "next_id")
_OLD_TOP_KEYS = ("kind", "version", "learning_rate", "vertices", "edges", "head_id", "next_id")
_VERTEX_KEYS = ("id", "activation")
_EDGE_KEYS = ("id", "src", "dst", "op", "skip", "gated")
_CONV_KEYS = ("kernel", "stride", "channels")


@dataclass(frozen=True)
class Vertex:
    """A tensor: the sum of its inputs, then its activation."""

    id: int
    activation: str = "linear"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "activation": self.activation}


@dataclass(frozen=True)
class Edge:
    """A backbone convolution or identity, or (``skip``) an identity from an earlier vertex.

    A ``gated`` skip is scaled by a learned scalar (born 0 by the function-preserving add-skip).
    """

    id: int
    src: int
    dst: int
    op: str = "identity"
    skip: bool = False
    kernel: tuple[int, int] | None = None
    stride: int | None = None
    channels: int | None = None
    gated: bool = False

    @property
    def is_conv(self) -> bool:
        return self.op == "conv"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "src": self.src,
            "dst": self.dst,
            "op": self.op,
            "skip": self.skip,
        }
        if self.kernel is not None:
            data.update(kernel=list(self.kernel), stride=self.stride, channels=self.channels)
        if self.gated:
            data["gated"] = True
        return data


@dataclass(frozen=True)
class DNA:
    """An immutable DNA graph; construction checks the graph, ``from_json`` checks the fields too."""

    kind: ClassVar[str] = KIND
    supports_crossover: ClassVar[bool] = False

    lr: float
    vertices: tuple[Vertex, ...]
    edges: tuple[Edge, ...]
    head_id: int
    next_id: int
    hparams: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """The genes other than the learning rate (``lr``, the first gene, which DNA mutates itself)."""

    def __post_init__(self) -> None:
        _check_graph(self)

    # ----- structure -------------------------------------------------------------------

    @property
    def input_id(self) -> int:
        return self.vertices[0].id

    @property
    def output_id(self) -> int:
        return self.vertices[-1].id

    def backbone(self) -> dict[int, Edge]:
        """The backbone edge into each non-input vertex, by vertex id."""
        return {e.dst: e for e in self.edges if not e.skip}

    def convs(self) -> list[Edge]:
        return [e for e in self.edges if e.is_conv]

    def skips(self) -> list[Edge]:
        return [e for e in self.edges if e.skip]

    def position(self) -> dict[int, int]:
        """Each vertex id's index in backbone order."""
        return {v.id: i for i, v in enumerate(self.vertices)}

    def channels(self, in_channels: int) -> dict[int, int]:
        """Channel count of every vertex: its backbone input's (a conv sets it, an identity passes it)."""
        backbone = self.backbone()
        counts = {self.input_id: in_channels}
        for vertex in self.vertices[1:]:
            edge = backbone[vertex.id]
            counts[vertex.id] = edge.channels if edge.channels is not None else counts[edge.src]
        return counts

    # ----- the Genome protocol ---------------------------------------------------------

    @classmethod
    def initial(cls, rng: random.Random, space: SearchSpace) -> DNA:
        """The paper's trivial individual (input and output joined by one identity, no convolutions),
        or with ``initial_convs`` k > 0 a plain stem: k 3x3 convs with batch norm and ReLU, each
        halving the resolution (up to ``max_stride``) and doubling ``initial_channels``.
        """
        from genomes.dna.mutations import dna_options

        opts = dna_options(space)
        genes = draw_values(space.hparams, rng)
        lr = genes.pop("learning_rate", opts.initial_lr)
        if opts.initial_convs == 0:
            return cls(lr=lr, vertices=(Vertex(0, "linear"), Vertex(1, "linear")),
                       edges=(Edge(2, 0, 1),), head_id=3, next_id=4, hparams=genes)
        vertices, edges, stride_left = [Vertex(0, "linear")], [], opts.max_stride
        for i in range(opts.initial_convs):
            stride = 2 if stride_left >= 2 else 1
            stride_left //= stride
            vertices.append(Vertex(2 * i + 1, "bn_relu"))
            edges.append(Edge(2 * i + 2, 2 * i - 1 if i else 0, 2 * i + 1, "conv", False, (3, 3), stride,
                              opts.initial_channels * 2**i))
        head = 2 * opts.initial_convs + 1
        return cls(lr=lr, vertices=tuple(vertices), edges=tuple(edges), head_id=head, next_id=head + 1,
                   hparams=genes)

    def mutate(self, rng: random.Random, space: SearchSpace) -> tuple[DNA, Mutation]:
        """The graph (``alter-learning-rate`` among its mutations, as in the paper), the other genes or both
        (``genomes.hparams.mutate_parts``)."""
        genes = {name: gene for name, gene in space.hparams.items() if name != "learning_rate"}
        return mutate_parts(self, lambda: self._mutate_graph(rng, space), genes, self.hparams, rng,
                            lambda dna, values: replace(dna, hparams=values))

    def _mutate_graph(self, rng: random.Random, space: SearchSpace) -> tuple[DNA, Mutation]:
        """Apply one applicable mutation drawn by ``mutation_weights`` (uniform in the paper);
        redraw while the child exceeds the bounds (``genomes.dna.mutations`` holds the tables)."""
        from genomes.dna.mutations import APPLICABLE, MORPHISMS, MUTATIONS, _always, dna_options, identity

        opts = dna_options(space)
        table = MORPHISMS if opts.morphisms else MUTATIONS
        names = [name for name in table if opts.weight(name) > 0 and APPLICABLE.get(name, _always)(self, space)]
        for _ in range(MAX_MUTATION_TRIES if names else 0):
            name = rng.choices(names, weights=[opts.weight(n) for n in names])[0]
            child, params = table[name](self, rng, space)
            if space.admits(child) and opts.within(child):
                return child, Mutation(name, params)
        child, params = identity(self, rng, space)
        return child, Mutation("identity", params)

    def crossover(self, other: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, DNA, Mutation]:
        raise GenomeError("dna genomes have no crossover")

    def to_module(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        from genomes.dna.net import DNANet  # torch only where a network is built

        return DNANet(self, input_shape, num_classes)

    def inherit(self, module: nn.Module, parent_state: Mapping[str, Any], mutation: Mutation | None) -> Inheritance:
        from genomes.dna.net import morph

        return morph(self, module, parent_state, mutation)

    def param_count(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        """Conv weights (no bias), batch-norm scale and shift, skip gates, and the linear head with bias."""
        channels = self.channels(input_shape[0])
        convs = sum(channels[e.src] * e.channels * e.kernel[0] * e.kernel[1] for e in self.convs())
        norms = sum(2 * channels[v.id] for v in self.vertices if v.activation == "bn_relu")
        gates = sum(1 for e in self.skips() if e.gated)
        head = channels[self.output_id] * num_classes + num_classes
        return convs + norms + gates + head

    def flops(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        """Convolutions at each vertex's resolution (padding k // 2, the backbone's strides) and the head."""
        channels = self.channels(input_shape[0])
        size = {self.input_id: input_shape[1:]}
        total = 0
        for edge in (self.backbone()[v.id] for v in self.vertices[1:]):
            h, w = size[edge.src]
            if edge.is_conv:
                (kh, kw), s = edge.kernel, edge.stride
                h, w = (h + 2 * (kh // 2) - kh) // s + 1, (w + 2 * (kw // 2) - kw) // s + 1
                total += 2 * h * w * channels[edge.src] * edge.channels * kh * kw
            size[edge.dst] = (h, w)
        return total + 2 * channels[self.output_id] * num_classes

    def learning_rate(self) -> float:
        return self.lr

    def genes(self) -> dict[str, Any]:
        return {"learning_rate": self.lr, **self.hparams}

    def to_json(self) -> dict[str, Any]:
        """The learning rate is the first gene (``hparams``); a DNA written before genes existed kept it at
        the top level, and still parses."""
        return {
            "kind": KIND,
            "version": VERSION,
            "hparams": self.genes(),
            "vertices": [v.to_json() for v in self.vertices],
            "edges": [e.to_json() for e in self.edges],
            "head_id": self.head_id,
            "next_id": self.next_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DNA:
        return _parse_dna(data)

    def content_hash(self) -> str:
        """Hash of the architecture alone: vertices relabelled by position, edges sorted, lr ignored."""
        position = self.position()
        edges = sorted(_canonical_edge(e, position) for e in self.edges)
        canonical = {"vertices": [v.activation for v in self.vertices], "edges": edges}
        return genes_hash(hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest(),
                          self.hparams)

    def describe(self) -> str:
        return (
            f"dna: {len(self.vertices)} vertices, {len(self.convs())} conv, "
            f"{len(self.skips())} skip, lr {self.lr:.3g}"
        ) + (f", {format_values(self.hparams)}" if self.hparams else "")

    def stats(self, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, int | float | str]:
        return {
            "depth": sum(1 for e in self.backbone().values() if e.is_conv),
            "convs": len(self.convs()),
            "skips": len(self.skips()),
            "params": self.param_count(input_shape, num_classes),
            "learning_rate": self.lr,
            "vertices": len(self.vertices),
            **self.hparams,
        }


def _canonical_edge(edge: Edge, position: Mapping[int, int]) -> tuple[int | bool | str, ...]:
    """An edge with vertices named by backbone position and no id; zeros for an identity's conv fields."""
    kh, kw = edge.kernel or (0, 0)
    ends = (position[edge.src], position[edge.dst])
    fields = (*ends, edge.skip, edge.op, kh, kw, edge.stride or 0, edge.channels or 0)
    return (*fields, True) if edge.gated else fields  # ungated edges hash as before gates existed


# ----- graph checks ------------------------------------------------------------------------


def _check_graph(dna: DNA) -> None:
    """Ids unique, endpoints known, acyclic, one backbone edge into each vertex from its predecessor."""
    if not (isinstance(dna.lr, float) and math.isfinite(dna.lr) and dna.lr > 0):
        raise GenomeError(f"learning_rate: must be a positive finite number, got {dna.lr!r}")
    if len(dna.vertices) < 2:
        raise GenomeError(f"vertices: need an input and an output vertex, got {len(dna.vertices)} vertices")
    if dna.vertices[0].activation != "linear":
        got = dna.vertices[0].activation
        raise GenomeError(f"vertices[0].activation: the input vertex must be 'linear', got {got!r}")
    _check_ids(dna)
    known = {v.id for v in dna.vertices}
    for i, edge in enumerate(dna.edges):
        for end in ("src", "dst"):
            if getattr(edge, end) not in known:
                raise GenomeError(f"edges[{i}].{end}: unknown vertex {getattr(edge, end)!r}")
    _check_acyclic(dna)
    _check_backbone(dna)
    _check_skips(dna)


def _check_ids(dna: DNA) -> None:
    labelled = [(f"vertices[{i}].id", v.id) for i, v in enumerate(dna.vertices)]
    labelled += [(f"edges[{i}].id", e.id) for i, e in enumerate(dna.edges)]
    labelled.append(("head_id", dna.head_id))
    seen: dict[int, str] = {}
    for path, ident in labelled:
        if ident in seen:
            raise GenomeError(f"{path}: duplicate id {ident!r} (also {seen[ident]})")
        seen[ident] = path
    highest = max(seen)
    if dna.next_id <= highest:
        raise GenomeError(f"next_id: must exceed every id (largest is {highest}), got {dna.next_id!r}")


def _check_acyclic(dna: DNA) -> None:
    """Kahn's topological sort over all edges; what it cannot order contains a cycle, which we name."""
    successors: dict[int, list[int]] = {v.id: [] for v in dna.vertices}
    indegree = dict.fromkeys(successors, 0)
    for edge in dna.edges:
        successors[edge.src].append(edge.dst)
        indegree[edge.dst] += 1
    ready = [v for v, d in indegree.items() if d == 0]
    while ready:
        for nxt in successors[ready.pop()]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    left = {v for v, d in indegree.items() if d > 0}
    if left:
        cycle = " -> ".join(str(v) for v in _find_cycle(dna, left))
        raise GenomeError(f"edges: cycle through vertices {cycle}")


def _find_cycle(dna: DNA, left: set[int]) -> list[int]:
    """Walk predecessors inside the unsorted set (each has one there) until a vertex repeats."""
    predecessor = {e.dst: e.src for e in dna.edges if e.src in left and e.dst in left}
    walk: list[int] = [min(left)]
    while walk[-1] not in walk[:-1]:
        walk.append(predecessor[walk[-1]])
    loop = walk[walk.index(walk[-1]) :]
    return loop[::-1]


def _check_backbone(dna: DNA) -> None:
    into: dict[int, list[int]] = {v.id: [] for v in dna.vertices}
    for i, edge in enumerate(dna.edges):
        if not edge.skip:
            into[edge.dst].append(i)
    for pos, vertex in enumerate(dna.vertices):
        found = into[vertex.id]
        if pos == 0 and found:
            raise GenomeError(f"edges[{found[0]}].dst: input vertex {vertex.id} cannot have a backbone input")
        if pos > 0 and len(found) != 1:
            what = "no backbone input" if not found else f"{len(found)} backbone inputs (edges {found})"
            raise GenomeError(f"vertices[{pos}]: vertex {vertex.id} has {what}; expected exactly one")
        if pos > 0 and dna.edges[found[0]].src != dna.vertices[pos - 1].id:
            edge = dna.edges[found[0]]
            raise GenomeError(
                f"edges[{found[0]}].src: a backbone edge must leave the previous vertex "
                f"{dna.vertices[pos - 1].id}, got {edge.src!r}"
            )


def _check_skips(dna: DNA) -> None:
    seen: set[tuple[int, int]] = set()
    for i, edge in enumerate(dna.edges):
        if edge.skip and edge.is_conv:
            raise GenomeError(f"edges[{i}].op: skip edges must be 'identity', got 'conv'")
        if edge.skip and (edge.src, edge.dst) in seen:
            raise GenomeError(f"edges[{i}]: duplicate skip {edge.src} -> {edge.dst}")
        if edge.skip:
            seen.add((edge.src, edge.dst))


# ----- JSON parsing ------------------------------------------------------------------------


def _parse_dna(data: Mapping[str, Any]) -> DNA:
    old = isinstance(data, Mapping) and "learning_rate" in data  # written before genes existed
    _check_keys(data, _OLD_TOP_KEYS if old else _TOP_KEYS, "")
    if _require(data, "kind", "") != KIND:
        raise GenomeError(f"kind: expected {KIND!r}, got {data['kind']!r}")
    if _require(data, "version", "") != VERSION:
        raise GenomeError(f"version: unsupported version {data['version']!r}; expected {VERSION}")
    genes = {} if old else parse_values(_require(data, "hparams", ""))
    if not old and "learning_rate" not in genes:
        raise GenomeError("hparams.learning_rate: missing (a DNA carries its learning rate)")
    lr = data["learning_rate"] if old else genes.pop("learning_rate")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise GenomeError(f"{'' if old else 'hparams.'}learning_rate: must be a positive finite number, got {lr!r}")
    vertices = tuple(_parse_vertex(v, f"vertices[{i}]") for i, v in enumerate(_list(data, "vertices")))
    edges = tuple(_parse_edge(e, f"edges[{i}]") for i, e in enumerate(_list(data, "edges")))
    return DNA(
        lr=float(lr),
        vertices=vertices,
        edges=edges,
        head_id=_int(_require(data, "head_id", ""), "head_id", 0),
        next_id=_int(_require(data, "next_id", ""), "next_id", 0),
        hparams=genes,
    )


def _parse_vertex(data: Any, path: str) -> Vertex:
    _check_keys(data, _VERTEX_KEYS, path)
    activation = _require(data, "activation", path)
    if activation not in ACTIVATIONS:
        expected = list(ACTIVATIONS)
        raise GenomeError(f"{path}.activation: unknown activation {activation!r}; expected one of {expected}")
    return Vertex(id=_int(_require(data, "id", path), f"{path}.id", 0), activation=activation)


def _parse_edge(data: Any, path: str) -> Edge:
    _check_keys(data, _EDGE_KEYS + _CONV_KEYS, path)
    ident, src, dst = (_int(_require(data, key, path), f"{path}.{key}", 0) for key in ("id", "src", "dst"))
    op = _require(data, "op", path)
    if op not in OPS:
        raise GenomeError(f"{path}.op: unknown op {op!r}; expected one of {list(OPS)}")
    skip = _require(data, "skip", path)
    if not isinstance(skip, bool):
        raise GenomeError(f"{path}.skip: must be true or false, got {skip!r}")
    gated = data.get("gated", False)
    if not isinstance(gated, bool) or (gated and not skip):
        raise GenomeError(f"{path}.gated: only a skip edge may be gated (true or false), got {gated!r}")
    if op == "identity":
        extra = [key for key in _CONV_KEYS if key in data]
        if extra:
            raise GenomeError(f"{path}.{extra[0]}: not allowed on an identity edge, got {data[extra[0]]!r}")
        return Edge(ident, src, dst, op, skip, gated=gated)
    if skip:
        raise GenomeError(f"{path}.op: skip edges must be 'identity', got 'conv'")
    kernel = _require(data, "kernel", path)
    if not (isinstance(kernel, (list, tuple)) and len(kernel) == 2 and all(_is_odd_size(k) for k in kernel)):
        raise GenomeError(f"{path}.kernel: must be [kh, kw], two odd ints >= 1, got {kernel!r}")
    stride = _require(data, "stride", path)
    if not (_is_power_of_two(stride) and stride <= STRIDE_LIMIT):
        raise GenomeError(f"{path}.stride: must be a power of two in 1..{STRIDE_LIMIT}, got {stride!r}")
    channels = _int(_require(data, "channels", path), f"{path}.channels", 1)
    return Edge(ident, src, dst, op, skip, (kernel[0], kernel[1]), stride, channels)


def _check_keys(data: Any, allowed: tuple[str, ...], path: str) -> None:
    if not isinstance(data, Mapping):
        raise GenomeError(f"{path or 'genome'}: must be an object, got {data!r}")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise GenomeError(f"{_join(path, unknown[0])}: unknown key {unknown[0]!r}")


def _require(data: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in data:
        raise GenomeError(f"{_join(path, key)}: missing required field")
    return data[key]


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = _require(data, key, "")
    if not isinstance(value, (list, tuple)):
        raise GenomeError(f"{key}: must be a list, got {value!r}")
    return list(value)


def _int(value: Any, path: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GenomeError(f"{path}: must be an int >= {minimum}, got {value!r}")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_odd_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1 and value % 2 == 1


def _is_power_of_two(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1 and value & (value - 1) == 0
