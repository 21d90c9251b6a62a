"""A mutation for people: ``insert conv 3x3 (stride 1, 16 channels) after vertex 4``, ``learning rate
0.1 → 0.082``, where the record holds a name and JSON parameters.

The built-in kinds' mutation names are told apart by name and parameters alone (no kind needed), so
a view that has only a record's ``mutation`` can say what happened. A name this module does not know
(a genome class of your own) reads as its words and its parameters: ``swap-block block 2`` and so on.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

Params = Mapping[str, Any]


def mutation_words(name: str | None, params: Params | None = None) -> str:
    """What a mutation did, in words; "initial" for an individual no mutation made."""
    if not name:
        return "initial"
    params = dict(params or {})
    genes = dict(params.pop("hparams", None) or {})
    if name == "alter-learning-rate" and {"old", "new"} <= set(params):  # DNA's own learning-rate gene
        genes = {"learning_rate": {"old": params.pop("old"), "new": params.pop("new")}, **genes}
        name = "alter-hparams"
    changes = ", ".join(f"{gene.replace('_', ' ')} {value(c.get('old'))} → {value(c.get('new'))}"
                        for gene, c in genes.items() if isinstance(c, Mapping))
    if name == "alter-hparams":
        return changes or "no gene changed"
    architecture = _ARCHITECTURE.get(name, _generic)
    try:
        text = architecture(name, params)
    except (KeyError, TypeError, ValueError, IndexError):  # an older or foreign record's parameters
        text = _generic(name, params)
    return f"{text}; {changes}" if changes else text


def value(v: Any) -> str:
    """A gene value or parameter, short: floats to 3 significant digits."""
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    return str(v)


def _generic(name: str, params: Params) -> str:
    words = name.replace("-", " ").replace("_", " ")
    return words + ("" if not params else " " + ", ".join(f"{k.replace('_', ' ')} {value(v)}"
                                                          for k, v in sorted(params.items())))


def _preserving(params: Params) -> str:
    return ", function-preserving" if params.get("preserving") else ""


def _insert(name: str, p: Params) -> str:
    activation = "" if p.get("activation") in (None, "linear") else f", then {str(p['activation']).replace('_', '+')}"
    if name == "insert-convolution":
        channels = f"{p['channels']} channel{'' if p['channels'] == 1 else 's'}"
        return (f"insert conv 3x3 after vertex {p['after']} (stride {p['stride']}, {channels}"
                f"{activation}{_preserving(p)})")
    return f"insert a vertex after vertex {p['after']} (identity{activation}{_preserving(p)})"


def _remove_convolution(name: str, p: Params) -> str:
    return f"remove conv edge {p['edge']} (vertex {p['removed_vertex']} merged into vertex {p['into']})"


def _alter(what: str) -> Callable[[str, Params], str]:
    def words(name: str, p: Params) -> str:
        return f"{what} of conv edge {p['edge']} {value(p['old'])} → {value(p['new'])}{_preserving(p)}"
    return words


def _filter_size(name: str, p: Params) -> str:
    side = {"kh": "kernel height", "kw": "kernel width"}[p["axis"]]
    return f"{side} of conv edge {p['edge']} {p['old']} → {p['new']}{_preserving(p)}"


def _skip(name: str, p: Params) -> str:
    verb = "add" if name == "add-skip" else "remove"
    gated = ", gated and born at zero" if name == "add-skip" and p.get("preserving") else ""
    return f"{verb} skip vertex {p['src']} → vertex {p['dst']}{gated}"


def _reset_weights(name: str, p: Params) -> str:
    return "reset weights"


def _identity(name: str, p: Params) -> str:
    return f"no change ({p['reason']})" if p.get("reason") else "no change"


def _bit_flip(name: str, p: Params) -> str:
    by_stage: dict[int, list[int]] = {}
    for stage, bit in p["flipped"]:
        by_stage.setdefault(int(stage), []).append(int(bit))
    return "flip " + "; ".join(f"stage {s} bit{'s' if len(b) > 1 else ''} {', '.join(map(str, b))}"
                               for s, b in sorted(by_stage.items()))


def _edge(name: str, p: Params) -> str:
    return f"edge {p['edge']} {p['from']} → {p['to']}"


def _crossover(name: str, p: Params) -> str:
    for key, what in (("swapped_stages", "stages"), ("swapped_edges", "edges")):
        if key in p:
            swapped = list(p[key])
            return f"crossover, swapping {what} {', '.join(map(str, swapped))}" if swapped else \
                f"crossover, no {what} swapped"
    return _generic(name, p)


_ARCHITECTURE: dict[str, Callable[[str, Params], str]] = {
    "identity": _identity,
    "reset-weights": _reset_weights,
    "insert-convolution": _insert,
    "insert-one-to-one": _insert,
    "remove-convolution": _remove_convolution,
    "alter-stride": _alter("stride"),
    "alter-number-of-channels": _alter("channels"),
    "filter-size": _filter_size,
    "add-skip": _skip,
    "remove-skip": _skip,
    "bit-flip": _bit_flip,
    "edge": _edge,
    "crossover": _crossover,
}

__all__ = ["mutation_words", "value"]
