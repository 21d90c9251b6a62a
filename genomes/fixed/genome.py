"""A fixed network whose hyperparameter genes alone evolve (``genome = "fixed"``).

The network is named in the genome options: ``network = "lenet5"`` (built in: LeNet-5 with batch norm),
or ``"package.module:function"``, a function ``(input_shape, num_classes) -> torch.nn.Module`` of yours.
Every individual has the same network; what differs is ``hparams``. With inherited weights (the default
here) a steady-state run is population-based training (Jaderberg et al. 2017): a child takes its
parent's trained weights and perturbed settings and trains on. Without, it is seed 004's genetic
algorithm over training settings.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from genomes.base import (
    GenomeError,
    Inheritance,
    Mutation,
    SearchSpace,
    check_keys,
    import_attribute,
    inherit_weights,
)
from genomes.hparams import cross_values, draw_values, format_values, genes_hash, mutate_parts, parse_values

if TYPE_CHECKING:
    from torch import nn

KIND = "fixed"
VERSION = 1
BUILT_IN = ("lenet5",)
NETWORK = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
OPTION_KEYS = ("network",)


def parse_options(options: Mapping[str, Any]) -> str:
    """The network a fixed run names (``genome_options.network``); GenomeError names a bad one."""
    for key in options:
        if key not in OPTION_KEYS:
            raise GenomeError(f"options.{key}: unknown option of the fixed genome; known: {list(OPTION_KEYS)}")
    return check_network(options.get("network", "lenet5"), "options.network")


def check_network(name: Any, path: str) -> str:
    if not isinstance(name, str) or not (name in BUILT_IN or NETWORK.fullmatch(name)):
        raise GenomeError(f"{path}: expected {' or '.join(map(repr, BUILT_IN))} or 'package.module:function', "
                          f"got {name!r}")
    return name


def network_function(name: str) -> Callable[..., nn.Module]:
    """The function that builds ``name``'s network; GenomeError where it cannot be imported."""
    if name == "lenet5":
        from genomes.fixed.lenet import LeNet5

        return LeNet5
    module_name, _, attribute = name.partition(":")
    try:
        target = import_attribute(name)
    except AttributeError:
        raise GenomeError(f"network {name!r}: {module_name!r} has no {attribute!r}") from None
    except ImportError as exc:
        raise GenomeError(f"network {name!r}: cannot import {module_name!r} ({exc})") from None
    if not callable(target):
        raise GenomeError(f"network {name!r}: {attribute!r} is not callable")
    return target


@functools.lru_cache(maxsize=64)
def _measures(network: str, input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, int]:
    """Parameters and forward FLOPs of one image, measured once per network and task on the meta device:
    shapes without values, so no draw from torch's process-global generator, which a worker thread
    building a child at that moment has seeded (``evolve.training.train.build_module``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def measure(device: str) -> tuple[int, int]:
        with torch.device(device):
            module = build(network, input_shape, num_classes)
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                module.eval()(torch.zeros(1, *input_shape))
        return sum(p.numel() for p in module.parameters() if p.requires_grad), int(counter.get_total_flops())

    try:
        return measure("meta")
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # a network that needs real values
        with torch.random.fork_rng(devices=[]):
            return measure("cpu")


def build(network: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    from torch import nn

    module = network_function(network)(tuple(input_shape), num_classes)
    if not isinstance(module, nn.Module):
        raise GenomeError(f"network {network!r}: returned {type(module).__name__}, not a torch.nn.Module")
    return module


@dataclass(frozen=True)
class Fixed:
    """One network, named; the individual is its genes."""

    kind: ClassVar[str] = KIND
    supports_crossover: ClassVar[bool] = True

    network: str = "lenet5"
    hparams: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_network(self.network, "network")

    @classmethod
    def initial(cls, rng: random.Random, space: SearchSpace) -> Fixed:
        """The named network with every declared gene drawn at random."""
        return cls(parse_options(space.options), draw_values(space.hparams, rng))

    @classmethod
    def sample(cls, rng: random.Random, space: SearchSpace) -> Fixed:
        return cls.initial(rng, space)

    def mutate(self, rng: random.Random, space: SearchSpace) -> tuple[Fixed, Mutation]:
        """The genes (``genomes.hparams.mutate_values``): there is no architecture to change."""
        return mutate_parts(self, None, space.hparams, self.hparams, rng,
                            lambda genome, values: replace(genome, hparams=values))

    def crossover(self, other: Fixed, rng: random.Random, space: SearchSpace) -> tuple[Fixed, Fixed, Mutation]:
        if not isinstance(other, Fixed) or other.network != self.network:
            raise GenomeError(f"crossover: expected a fixed partner with network {self.network!r}, got {other!r}")
        genes_a, genes_b = cross_values(self.hparams, other.hparams, rng)
        return replace(self, hparams=genes_a), replace(other, hparams=genes_b), Mutation("crossover", {})

    def to_module(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return build(self.network, input_shape, num_classes)

    def inherit(self, module: nn.Module, parent_state: Mapping[str, Any], mutation: Mutation | None) -> Inheritance:
        return inherit_weights(module, parent_state)

    def param_count(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        return _measures(self.network, tuple(input_shape), num_classes)[0]

    def flops(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        return _measures(self.network, tuple(input_shape), num_classes)[1]

    def learning_rate(self) -> float | None:
        return None

    def genes(self) -> dict[str, Any]:
        return dict(self.hparams)

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "version": VERSION, "network": self.network, "hparams": dict(self.hparams)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fixed:
        if not isinstance(data, Mapping):
            raise GenomeError(f"fixed genome JSON must be an object, got {type(data).__name__}")
        check_keys(data, ("kind", "version", "network", "hparams"))
        if data["kind"] != KIND:
            raise GenomeError(f"kind: expected {KIND!r}, got {data['kind']!r}")
        if isinstance(data["version"], bool) or data["version"] != VERSION:
            raise GenomeError(f"version: expected {VERSION}, got {data['version']!r}")
        return cls(check_network(data["network"], "network"), parse_values(data["hparams"]))

    def content_hash(self) -> str:
        """The network's name and the genes' values."""
        return genes_hash(hashlib.sha256(f"{KIND}:{self.network}".encode()).hexdigest(), self.hparams)

    def describe(self) -> str:
        return f"fixed: {self.network}" + (f"; {format_values(self.hparams)}" if self.hparams else "")

    def stats(self, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, int | float | str]:
        return {"params": self.param_count(input_shape, num_classes), **self.hparams}
