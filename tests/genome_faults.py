"""Genome classes each broken in one way, for ``evolve doctor --genome`` to catch (tests/test_own_genomes.py).

Each is the MLP example's class with one method wrong; its ``kind`` is the name the doctor imports it by
(this folder on the path)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from torch import nn

from examples.mlp_space import MLPSpace
from genomes import Mutation


class WrongKind(MLPSpace):
    kind: ClassVar[str] = "mlp"


class OverBounds(MLPSpace):
    kind: ClassVar[str] = "genome_faults:OverBounds"

    @classmethod
    def initial(cls, rng, space):
        return cls((128, 128, 128, 128), "relu", 0.0)


class LosesDropout(MLPSpace):
    kind: ClassVar[str] = "genome_faults:LosesDropout"

    @classmethod
    def initial(cls, rng, space):
        return cls((32,), "relu", 0.2)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_json().items() if k != "dropout"}


class StillParent(MLPSpace):
    kind: ClassVar[str] = "genome_faults:StillParent"

    def mutate(self, rng, space):
        return self, Mutation("resize", {"at": 0})


class WrongOutputs(MLPSpace):
    kind: ClassVar[str] = "genome_faults:WrongOutputs"

    def to_module(self, input_shape, num_classes) -> nn.Module:
        return super().to_module(input_shape, num_classes + 1)

    def param_count(self, input_shape, num_classes) -> int:
        return super().param_count(input_shape, num_classes + 1)


class MiscountedParams(MLPSpace):
    kind: ClassVar[str] = "genome_faults:MiscountedParams"

    def param_count(self, input_shape, num_classes) -> int:
        return super().param_count(input_shape, num_classes) - 1


class BadCrossover(MLPSpace):
    kind: ClassVar[str] = "genome_faults:BadCrossover"
    supports_crossover: ClassVar[bool] = True

    def crossover(self, other, rng, space):
        big = replace(self, widths=(128, 128, 128, 128))
        return big, other, Mutation("crossover")


class NoSample(MLPSpace):
    kind: ClassVar[str] = "genome_faults:NoSample"
    sample = None  # optional in the protocol: without it, no random sampling
