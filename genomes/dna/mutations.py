"""The DNA genome's options and its mutations: Real et al. 2017's, and the function-preserving
morphisms of the default search (Net2Net, Elsken et al. 2017), with the odds of each.

A mutation takes a DNA and returns a new one and the JSON-ready parameters of what it did; the
weights of a function-preserving one are set by ``genomes.dna.net.morph``. ``DNA.mutate``
draws from these tables.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from genomes.base import GenomeError, SearchSpace
from genomes.dna.genome import (
    ACTIVATIONS,
    DNA,
    INITIAL_LEARNING_RATE,
    STRIDE_LIMIT,
    Edge,
    Vertex,
    _int,
    _is_power_of_two,
)

OPTION_KEYS = ("max_stride", "morphisms", "initial_convs", "initial_channels", "initial_lr", "mutation_weights",
               "max_channels", "max_kernel")


@dataclass(frozen=True)
class DnaOptions:
    """The DNA settings read from ``SearchSpace.options``; the defaults are the paper's.

    ``morphisms``: mutations that preserve the parent's function where they can (an inserted
    conv born as an identity, Net2Net widening, zero-born gated skips); ``initial_convs`` and
    ``initial_channels``: the initial individual (0 convs: the paper's trivial one);
    ``mutation_weights``: relative odds per mutation name (absent ones: 1, or the morphism table's);
    ``max_channels``, ``max_kernel``: the most channels a convolution may have and the longest side
    of its kernel (0: no bound beyond ``max_params``; a mutation that would pass them is redrawn).
    """

    max_stride: int = STRIDE_LIMIT
    morphisms: bool = False
    initial_convs: int = 0
    initial_channels: int = 8
    initial_lr: float = INITIAL_LEARNING_RATE
    mutation_weights: Mapping[str, float] = field(default_factory=dict)
    max_channels: int = 0
    max_kernel: int = 0

    def within(self, dna: DNA) -> bool:
        """Whether every convolution of ``dna`` keeps to the channel and kernel ranges."""
        return all((not self.max_channels or e.channels <= self.max_channels)
                   and (not self.max_kernel or max(e.kernel) <= self.max_kernel) for e in dna.convs())

    def weight(self, name: str) -> float:
        if name in self.mutation_weights:
            return self.mutation_weights[name]
        return MORPHISM_WEIGHTS.get(name, 1.0) if self.morphisms else 1.0


def dna_options(space: SearchSpace) -> DnaOptions:
    """Validate ``space.options`` for DNA genomes, naming the bad key or value."""
    options = space.options
    unknown = sorted(str(k) for k in options if k not in OPTION_KEYS)
    if unknown:
        raise GenomeError(f"space.options.{unknown[0]}: unknown option for dna genomes (known: {', '.join(OPTION_KEYS)})")
    value = options.get("max_stride", STRIDE_LIMIT)
    if not (_is_power_of_two(value) and value <= STRIDE_LIMIT):
        raise GenomeError(
            f"space.options.max_stride: must be a power of two in 1..{STRIDE_LIMIT}, got {value!r}"
        )
    morphisms = options.get("morphisms", False)
    if not isinstance(morphisms, bool):
        raise GenomeError(f"space.options.morphisms: must be true or false, got {morphisms!r}")
    convs = _int(options.get("initial_convs", 0), "space.options.initial_convs", 0)
    channels = _int(options.get("initial_channels", 8), "space.options.initial_channels", 1)
    lr = options.get("initial_lr", INITIAL_LEARNING_RATE)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise GenomeError(f"space.options.initial_lr: must be a positive number, got {lr!r}")
    weights = options.get("mutation_weights", {})
    if not isinstance(weights, Mapping):
        raise GenomeError(f"space.options.mutation_weights: must be a table of name = weight, got {weights!r}")
    for name, w in weights.items():
        if name not in MUTATIONS:
            raise GenomeError(f"space.options.mutation_weights.{name}: unknown mutation; known: {', '.join(MUTATIONS)}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise GenomeError(f"space.options.mutation_weights.{name}: must be a number >= 0, got {w!r}")
    max_channels = _int(options.get("max_channels", 0), "space.options.max_channels", 0)
    widest = channels * 2 ** (convs - 1) if convs else 0
    if max_channels and widest > max_channels:
        raise GenomeError(f"space.options.max_channels: {max_channels} is below the initial individual's widest "
                          f"convolution ({widest}: initial_channels {channels} doubled over {convs} convs)")
    max_kernel = _int(options.get("max_kernel", 0), "space.options.max_kernel", 0)
    if max_kernel and (max_kernel < 3 or max_kernel % 2 == 0):
        raise GenomeError(f"space.options.max_kernel: must be odd and >= 3 (0: no bound), got {max_kernel!r}")
    return DnaOptions(max_stride=value, morphisms=morphisms, initial_convs=convs, initial_channels=channels,
                      initial_lr=float(lr), mutation_weights={k: float(v) for k, v in weights.items()},
                      max_channels=max_channels, max_kernel=max_kernel)


def _max_stride(space: SearchSpace) -> int:
    return dna_options(space).max_stride


# ----- mutations ---------------------------------------------------------------------------

MutationFn = Callable[[DNA, random.Random, SearchSpace], tuple[DNA, dict[str, Any]]]


def alter_learning_rate(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    """Real et al.'s factor in [1/2, 2]; by the declared gene's rule where the run declares ``learning_rate``."""
    gene = space.hparams.get("learning_rate")
    new = gene.mutate(dna.lr, rng) if gene is not None else dna.lr * _factor(rng)
    return replace(dna, lr=new), {"old": dna.lr, "new": new}


def identity(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    """Keep training: the child is the parent."""
    return dna, {}


def reset_weights(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    """Fresh ids everywhere, so no parameter key matches the parent's and nothing is inherited."""
    fresh = itertools.count(dna.next_id)
    renamed = {v.id: next(fresh) for v in dna.vertices}
    vertices = tuple(replace(v, id=renamed[v.id]) for v in dna.vertices)
    edges = tuple(replace(e, id=next(fresh), src=renamed[e.src], dst=renamed[e.dst]) for e in dna.edges)
    head_id = next(fresh)
    child = replace(dna, vertices=vertices, edges=edges, head_id=head_id, next_id=head_id + 1)
    return child, {"first_id": dna.next_id, "next_id": child.next_id}


def insert_convolution(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    """A 3x3 conv keeping the channel count, so every existing layer keeps its shape."""
    return _insert_after(dna, rng, space, conv=True)


def insert_one_to_one(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    return _insert_after(dna, rng, space, conv=False)


def deepen(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    """Function-preserving insert-convolution (Net2DeeperNet): a stride-1 3x3 conv born as an identity."""
    return _insert_after(dna, rng, space, conv=True, preserving=True)


def insert_one_to_one_preserving(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    return _insert_after(dna, rng, space, conv=False, preserving=True)


def _insert_after(dna: DNA, rng: random.Random, space: SearchSpace, conv: bool,
                  preserving: bool = False) -> tuple[DNA, dict[str, Any]]:
    """Insert vertex v' after a random v, joined by a new edge v -> v'; v's old outgoing edge leaves v'.

    ``preserving``: v' copies v's activation (ReLU is the identity on a bn_relu vertex's output, not on
    a linear one's), a conv has stride 1, and the weights are born as identities (``dna_net.morph``).
    """
    pos = rng.randrange(len(dna.vertices))
    after = dna.vertices[pos].id
    vertex_id, edge_id = dna.next_id, dna.next_id + 1
    activation = dna.vertices[pos].activation if preserving else rng.choice(ACTIVATIONS)
    params: dict[str, Any] = {"after": after, "vertex": vertex_id, "edge": edge_id, "activation": activation}
    if preserving:
        params["preserving"] = True
    if conv:
        stride = 1 if preserving else rng.choice([s for s in (1, 2) if s <= _max_stride(space)])
        channels = dna.channels(space.input_shape[0])[after]
        edge = Edge(edge_id, after, vertex_id, "conv", False, (3, 3), stride, channels)
        params.update(stride=stride, channels=channels)
    else:
        edge = Edge(edge_id, after, vertex_id)
    moved = tuple(replace(e, src=vertex_id) if not e.skip and e.src == after else e for e in dna.edges)
    vertices = dna.vertices[: pos + 1] + (Vertex(vertex_id, activation),) + dna.vertices[pos + 1 :]
    return replace(dna, vertices=vertices, edges=moved + (edge,), next_id=dna.next_id + 2), params


def remove_convolution(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    """Merge a conv's destination v into its source u; v's edges now touch u; v's activation goes."""
    edge = _pick(rng, _removable_convs(dna), "remove-convolution")
    u, v = edge.src, edge.dst
    kept_skips = {(e.src, e.dst) for e in dna.skips() if v not in (e.src, e.dst)}
    edges: list[Edge] = []
    for e in dna.edges:
        if e.id == edge.id:
            continue
        src, dst = (u if e.src == v else e.src), (u if e.dst == v else e.dst)
        if e.skip and (src, dst) != (e.src, e.dst):
            if src == dst or (src, dst) in kept_skips:
                continue
            kept_skips.add((src, dst))
        edges.append(replace(e, src=src, dst=dst))
    vertices = tuple(x for x in dna.vertices if x.id != v)
    params = {"edge": edge.id, "removed_vertex": v, "into": u}
    return replace(dna, vertices=vertices, edges=tuple(edges)), params


def alter_stride(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    max_stride = _max_stride(space)
    edge = _pick(rng, [e for e in dna.convs() if _stride_moves(e, max_stride)], "alter-stride")
    new = rng.choice(_stride_moves(edge, max_stride))
    return _replace_edge(dna, replace(edge, stride=new)), {"edge": edge.id, "old": edge.stride, "new": new}


def alter_number_of_channels(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    edge = _pick(rng, dna.convs(), "alter-number-of-channels")
    new = _scaled_int(edge.channels, _factor(rng))
    params = {"edge": edge.id, "old": edge.channels, "new": new}
    return _replace_edge(dna, replace(edge, channels=new)), params


def filter_size(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    """Scale one side of one conv's kernel: vertical (kh) or horizontal (kw), kept odd."""
    return _resize_filter(dna, rng, _factor, preserving=False)


def _resize_filter(dna: DNA, rng: random.Random, factor: Callable[[random.Random], float],
                   preserving: bool) -> tuple[DNA, dict[str, Any]]:
    edge = _pick(rng, dna.convs(), "filter-size")
    axis = rng.choice(("kh", "kw"))
    kh, kw = edge.kernel
    old = kh if axis == "kh" else kw
    new = _scaled_odd(old, factor(rng))
    kernel = (new, kw) if axis == "kh" else (kh, new)
    params: dict[str, Any] = {"edge": edge.id, "axis": axis, "old": old, "new": new}
    if preserving:
        params["preserving"] = True
    return _replace_edge(dna, replace(edge, kernel=kernel)), params


def add_skip(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    return _add_skip(dna, rng, gated=False)


def add_gated_skip(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    """Function-preserving add-skip: the skip is scaled by a learned gate born at zero."""
    return _add_skip(dna, rng, gated=True)


def _add_skip(dna: DNA, rng: random.Random, gated: bool) -> tuple[DNA, dict[str, Any]]:
    src, dst = _pick(rng, _free_skip_pairs(dna), "add-skip")
    edge = Edge(dna.next_id, src, dst, "identity", skip=True, gated=gated)
    child = replace(dna, edges=dna.edges + (edge,), next_id=dna.next_id + 1)
    params: dict[str, Any] = {"edge": edge.id, "src": src, "dst": dst}
    if gated:
        params["preserving"] = True
    return child, params


def widen(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    """Function-preserving alter-number-of-channels (Net2WiderNet): a conv grows by a factor in (1, 2];
    its new units copy random old ones and their consumers split the outgoing weights among the copies.

    Only convs whose widening is exact are drawn (see ``_widenable``). ``seed`` fixes which units are
    copied and how the weights are split, so ``dna_net.morph`` can replay it.
    """
    edge = _pick(rng, _widenable(dna, space), "alter-number-of-channels")
    new = _scaled_int(edge.channels, _growth(rng))  # always above the old count
    params = {"edge": edge.id, "old": edge.channels, "new": new, "seed": rng.randrange(2**31),
              "preserving": True}
    return _replace_edge(dna, replace(edge, channels=new)), params


def grow_filter(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    """Function-preserving filter-size: one side of a kernel grows, the old kernel zero-padded at its centre."""
    return _resize_filter(dna, rng, _growth, preserving=True)


def _growth(rng: random.Random) -> float:
    """Log-uniform in [1, 2]: the growing half of ``_factor``."""
    return math.exp(rng.uniform(0.0, math.log(2)))


def widening_run(dna: DNA, edge: Edge) -> list[int]:
    """The vertices whose channel count follows ``edge``'s: its destination and the identities after it."""
    backbone = dna.backbone()
    ids = [v.id for v in dna.vertices]
    run = [edge.dst]
    for vertex in ids[ids.index(edge.dst) + 1:]:
        if backbone[vertex].is_conv:
            break
        run.append(vertex)
    return run


def _widenable(dna: DNA, space: SearchSpace) -> list[Edge]:
    """Convs whose widening keeps the function exactly: no skip enters their run from outside it (it
    would feed a new unit other channels than the unit it copies), and no skip leaves it for a vertex
    wider than the conv (the zero padding there would become copies)."""
    channels = dna.channels(space.input_shape[0])
    eligible = []
    for edge in dna.convs():
        run = set(widening_run(dna, edge))
        if all((e.src in run) == (e.dst in run) or (e.src in run and channels[e.dst] <= edge.channels)
               for e in dna.skips()):
            eligible.append(edge)
    return eligible


def remove_skip(dna: DNA, rng: random.Random, space: SearchSpace) -> tuple[DNA, dict[str, Any]]:
    edge = _pick(rng, dna.skips(), "remove-skip")
    child = replace(dna, edges=tuple(e for e in dna.edges if e.id != edge.id))
    return child, {"edge": edge.id, "src": edge.src, "dst": edge.dst}


def _factor(rng: random.Random) -> float:
    """Log-uniform in [1/2, 2], so halving and doubling are equally likely."""
    return math.exp(rng.uniform(-math.log(2), math.log(2)))


def _scaled_int(old: int, factor: float) -> int:
    """``old * factor`` rounded, >= 1, and unlike ``old`` (else nudged by one in the factor's direction)."""
    new = max(1, round(old * factor))
    if new == old:
        new = old + 1 if factor >= 1 or old == 1 else old - 1
    return new


def _scaled_odd(old: int, factor: float) -> int:
    """``old * factor`` rounded to the nearest odd size >= 1, different from ``old``."""
    new = max(1, 2 * round((old * factor - 1) / 2) + 1)
    if new == old:
        new = old + 2 if factor >= 1 or old == 1 else old - 2
    return new


def _stride_moves(edge: Edge, max_stride: int) -> list[int]:
    stride = edge.stride or 1
    return [s for s in (stride * 2, stride // 2) if 1 <= s <= max_stride]


def _removable_convs(dna: DNA) -> list[Edge]:
    """Backbone convs whose merge leaves at least an input and an output vertex."""
    return dna.convs() if len(dna.vertices) > 2 else []


def _free_skip_pairs(dna: DNA) -> list[tuple[int, int]]:
    taken = {(e.src, e.dst) for e in dna.skips()}
    ids = [v.id for v in dna.vertices]
    return [(u, w) for i, u in enumerate(ids) for w in ids[i + 1 :] if (u, w) not in taken]


def _replace_edge(dna: DNA, new: Edge) -> DNA:
    return replace(dna, edges=tuple(new if e.id == new.id else e for e in dna.edges))


def _pick(rng: random.Random, choices: list[Any], name: str) -> Any:
    if not choices:
        raise GenomeError(f"{name}: not applicable to this genome")
    return rng.choice(choices)


def _always(dna: DNA, space: SearchSpace) -> bool:
    return True


MUTATIONS: dict[str, MutationFn] = {
    "alter-learning-rate": alter_learning_rate,
    "identity": identity,
    "reset-weights": reset_weights,
    "insert-convolution": insert_convolution,
    "remove-convolution": remove_convolution,
    "alter-stride": alter_stride,
    "alter-number-of-channels": alter_number_of_channels,
    "filter-size": filter_size,
    "insert-one-to-one": insert_one_to_one,
    "add-skip": add_skip,
    "remove-skip": remove_skip,
}

MORPHISMS: dict[str, MutationFn] = {
    **MUTATIONS,
    "insert-convolution": deepen,
    "alter-number-of-channels": widen,
    "filter-size": grow_filter,
    "insert-one-to-one": insert_one_to_one_preserving,
    "add-skip": add_gated_skip,
}
"""With ``morphisms`` on: the same names, the function-preserving versions where there is one."""

MORPHISM_WEIGHTS: dict[str, float] = {
    "insert-convolution": 3.0,
    "alter-number-of-channels": 3.0,
    "alter-learning-rate": 1.0,
    "add-skip": 0.5,
    "filter-size": 0.5,
    "alter-stride": 0.5,
    "identity": 0.5,
    "remove-convolution": 0.25,
    "remove-skip": 0.25,
    "insert-one-to-one": 0.1,
    "reset-weights": 0.0,
}
"""Default odds with ``morphisms`` on: growth by function-preserving steps (Elsken et al. 2017) first."""

APPLICABLE: dict[str, Callable[[DNA, SearchSpace], bool]] = {
    "remove-convolution": lambda dna, space: bool(_removable_convs(dna)),
    "alter-stride": lambda dna, space: any(_stride_moves(e, _max_stride(space)) for e in dna.convs()),
    "alter-number-of-channels": lambda dna, space: bool(
        _widenable(dna, space) if dna_options(space).morphisms else dna.convs()),
    "filter-size": lambda dna, space: bool(dna.convs()),
    "add-skip": lambda dna, space: len(dna.skips()) < math.comb(len(dna.vertices), 2),
    "remove-skip": lambda dna, space: bool(dna.skips()),
}
"""Mutations not listed here always apply."""
