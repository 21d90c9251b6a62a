"""What every genome offers the engine, so the engine never branches on the kind.

A genome is an immutable value: mutation and crossover return new genomes.
Genomes know nothing of stores or Ray; they know torch only to build a module
(imported there, so evolving, checking and reporting never pay for importing torch).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Protocol, Self, Sequence, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn


def import_attribute(name: str) -> Any:
    """The object ``package.module:attribute.path`` names. Raises the import's own exception where the module
    does not import, AttributeError where it has no such attribute: each caller words its message."""
    import importlib

    module_name, _, attribute = name.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise AttributeError(attribute)
    return target


class GenomeError(ValueError):
    """A genome (or its JSON) is invalid; the message names the field and the bad value."""


def check_int(value: Any, path: str, minimum: int) -> int:
    """``value`` if it is an int (not a bool) >= ``minimum``; else GenomeError naming ``path``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GenomeError(f"{path}: expected an int >= {minimum}, got {value!r}")
    return value


def check_keys(data: Mapping[str, Any], keys: Sequence[str], path: str = "") -> None:
    """Exactly ``keys``: a missing or unknown one is named with its path."""
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in keys:
            raise GenomeError(f"{prefix}{key}: unknown field (expected {list(keys)})")
    for key in keys:
        if key not in data:
            raise GenomeError(f"{prefix}{key}: missing field")


@dataclass(frozen=True)
class Mutation:
    """Which operator produced a child and with what parameters (JSON-ready)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Mutation:
        return cls(name=str(data["name"]), params=dict(data.get("params", {})))


@dataclass(frozen=True)
class SearchSpace:
    """What a genome must fit: the task's input and classes, a parameter bound, kind options, genes.

    ``options`` holds kind-specific settings (e.g. the Genetic-CNN's nodes per stage);
    each kind validates them and rejects unknown keys by name. ``hparams`` declares the
    hyperparameter genes every individual carries (``genomes.hparams``; given as JSON or one-line
    specs, held parsed).
    """

    input_shape: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10
    max_params: int = 2_000_000
    max_flops: int = 0  # forward FLOPs of one image; 0: no bound
    options: Mapping[str, Any] = field(default_factory=dict)
    hparams: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from genomes.hparams import parse_hparams

        object.__setattr__(self, "hparams", parse_hparams(self.hparams))
        shape = tuple(self.input_shape)
        if len(shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise GenomeError(f"input_shape must be three positive ints (C, H, W), got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 1:
            raise GenomeError(f"num_classes (the outputs: classes, or 1 regression target) must be an int >= 1, "
                              f"got {self.num_classes!r}")
        if not isinstance(self.max_params, int) or self.max_params < 1:
            raise GenomeError(f"max_params must be a positive int, got {self.max_params!r}")
        if not isinstance(self.max_flops, int) or self.max_flops < 0:
            raise GenomeError(f"max_flops must be an int >= 0 (0: no bound), got {self.max_flops!r}")

    def admits(self, genome: Genome) -> bool:
        """Whether ``genome`` is within the parameter bound and (where set) the FLOPs bound."""
        if genome.param_count(self.input_shape, self.num_classes) > self.max_params:
            return False
        return not self.max_flops or genome.flops(self.input_shape, self.num_classes) <= self.max_flops

    def bounds(self) -> str:
        """The bounds for messages: "max_params 100,000" or "max_params 100,000, max_flops 5,000,000"."""
        flops = f", max_flops {self.max_flops:,}" if self.max_flops else ""
        return f"max_params {self.max_params:,}{flops}"


@runtime_checkable
class Genome(Protocol):
    """The protocol both genome kinds satisfy."""

    kind: ClassVar[str]
    supports_crossover: ClassVar[bool]

    @classmethod
    def initial(cls, rng: random.Random, space: SearchSpace) -> Self:
        """A member of the initial population."""
        ...

    # Optional: ``sample(rng, space) -> Self``, a uniform draw from the whole space, for kinds whose
    # space is finite (gcnn, nb201). ``selection = "random"`` needs it; DNA's space is unbounded.

    def mutate(self, rng: random.Random, space: SearchSpace) -> tuple[Self, Mutation]:
        """A mutated copy within ``space.max_params``, and the mutation applied."""
        ...

    def crossover(self, other: Self, rng: random.Random, space: SearchSpace) -> tuple[Self, Self, Mutation]:
        """Two children of ``self`` and ``other`` (raises GenomeError where the kind has none)."""
        ...

    def to_module(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        """A fresh torch module whose state-dict keys name stable positions in the genome."""
        ...

    def inherit(self, module: nn.Module, parent_state: Mapping[str, torch.Tensor],
                mutation: Mutation | None) -> Inheritance:
        """Load into ``module`` (built from this genome) what it takes from its parent's trained state.

        ``mutation`` is the one that made this genome from that parent (None: unknown), so a kind
        can carry a function-preserving change over exactly (see ``genomes.dna.net.morph``).
        """
        ...

    def param_count(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        """Trainable parameters of ``to_module(...)``, computed without building it."""
        ...

    def flops(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        """Forward FLOPs of one image through ``to_module(...)`` as torch's FlopCounterMode counts them
        (2 per multiply-add of convolutions and linear layers), computed without building it."""
        ...

    def learning_rate(self) -> float | None:
        """The learning rate the genome carries, or None to use the run's."""
        ...

    # Optional: ``genes() -> dict``, the values of the hyperparameter genes the genome carries
    # (``space.hparams`` declares them; ``genomes.hparams`` draws, mutates and crosses them). A kind
    # without it carries none, and a run that declares genes refuses it.

    def to_json(self) -> dict[str, Any]: ...

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """Parse and validate; raises GenomeError naming the bad field."""
        ...

    def content_hash(self) -> str:
        """Equal architectures hash equal (ids and learning rate aside)."""
        ...

    def describe(self) -> str:
        """One line for people."""
        ...

    def stats(self, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, int | float | str]:
        """Flat numbers for dashboards (depth, params, learning rate, ...)."""
        ...


REQUIRED = ("initial", "mutate", "to_module", "param_count", "to_json", "from_json", "content_hash", "describe")
"""What a genome class of your own must define (``kind`` too: the name it is imported by)."""
OPTIONAL = ("sample", "crossover", "inherit", "flops", "learning_rate", "stats", "genes")
"""What it may define; ``GenomeBase`` supplies each but ``sample`` (``selection = "random"`` needs it)."""


class GenomeBase:
    """Defaults for the optional methods of the protocol, for a genome class of your own to subclass.

    Required of the subclass: ``kind`` (the name a worker imports it by, ``"package.module:Class"``),
    ``initial``, ``mutate``, ``to_module``, ``param_count``, ``to_json``, ``from_json``,
    ``content_hash`` and ``describe``. ``evolve doctor --genome package.module:Class`` checks them.
    """

    supports_crossover: ClassVar[bool] = False

    def crossover(self, other: Any, rng: random.Random, space: SearchSpace) -> tuple[Any, Any, Mutation]:
        raise GenomeError(f"{type(self).__name__} genomes have no crossover")

    def inherit(self, module: nn.Module, parent_state: Mapping[str, torch.Tensor],
                mutation: Mutation | None) -> Inheritance:
        """Every parent tensor whose key and shape survive (``inherit_weights``)."""
        return inherit_weights(module, parent_state)

    def flops(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        """Measured by torch's FlopCounterMode on a built module (the built-in kinds compute theirs)."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        module = self.to_module(input_shape, num_classes)  # type: ignore[attr-defined]
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            module.eval()(torch.zeros(1, *input_shape))
        return int(counter.get_total_flops())

    def learning_rate(self) -> float | None:
        return None

    def stats(self, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, int | float | str]:
        return {"params": self.param_count(input_shape, num_classes), **self.genes()}  # type: ignore[attr-defined]

    def genes(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Inheritance:
    """How much of a parent's trained state a child received."""

    tensors: int
    tensors_total: int
    elements: int
    elements_total: int

    @property
    def fraction(self) -> float:
        """Share of the child's parameter elements that came from the parent."""
        return self.elements / self.elements_total if self.elements_total else 1.0


def inherit_weights(child: nn.Module, parent_state: Mapping[str, torch.Tensor]) -> Inheritance:
    """Copy into ``child`` every parent tensor whose key (position) and shape still match.

    Genomes name module parameters by stable ids, so a key that survives a mutation
    means the same layer; a changed shape means the layer changed and is left fresh.
    Buffers (batch-norm statistics) follow their layer; ``fraction`` counts parameters only.
    """
    params = dict(child.named_parameters())
    state = child.state_dict()
    taken: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        source = parent_state.get(key)
        if source is not None and tuple(source.shape) == tuple(value.shape):
            taken[key] = source
    if taken:
        child.load_state_dict(taken, strict=False)
    tensors = sum(1 for k in params if k in taken)
    elements = sum(p.numel() for k, p in params.items() if k in taken)
    return Inheritance(
        tensors=tensors,
        tensors_total=len(params),
        elements=elements,
        elements_total=sum(p.numel() for p in params.values()),
    )
