"""Channel pruning of a trained Genetic CNN: per stage (``genomes.pruning``).

Every node of a stage has the stage's channel count and node outputs are summed channel by
channel, so a channel is the stage's, not a node's: removing channel j of stage s cuts output j of
each of its convolutions (and their batch norms), input j of each convolution inside the stage
that reads a node, input j of the next stage's input convolution, or column j of the head after
the last stage. Any channel may go (nothing is added by position across stages); the pruned
genome is the same stages with fewer channels.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import torch

from genomes.base import GenomeError
from genomes.gcnn.genome import KERNEL, GeneticCNN
from genomes.pruning import Group

_BN = ("weight", "bias", "running_mean", "running_var")


def groups(genome: GeneticCNN, input_shape: tuple[int, int, int], num_classes: int) -> list[Group]:
    """One group a stage, its cost the parameters one of its channels holds."""
    out = []
    in_channels = input_shape[0]
    for i, stage in enumerate(genome.stages):
        c = stage.channels
        inner = stage.convs_after_input(genome.version)  # convolutions reading the stage's own channels
        cost = KERNEL * KERNEL * in_channels + 2 + inner * (2 * KERNEL * KERNEL * c - KERNEL * KERNEL + 2)
        cost += (KERNEL * KERNEL * genome.stages[i + 1].channels if i + 1 < len(genome.stages) else num_classes)
        out.append(Group(id=i, vertices=(i,), channels=c, suffix_only=False, cost=cost))
        in_channels = c
    return out


def prune(genome: GeneticCNN, state: Mapping[str, torch.Tensor], remove: Mapping[int, list[int]],
          input_shape: tuple[int, int, int], num_classes: int) -> tuple[GeneticCNN, dict[str, torch.Tensor]]:
    """``genome`` without the channels ``remove`` names (stage index -> channels), the weights cut to match."""
    state = dict(state)
    stages = list(genome.stages)
    for i, channels in remove.items():
        if not isinstance(i, int) or not 0 <= i < len(stages):
            raise GenomeError(f"remove: the genome has stages 0..{len(stages) - 1}, not {i!r}")
        c = stages[i].channels
        gone = sorted(set(channels))
        if not gone:
            continue
        if gone[0] < 0 or gone[-1] >= c or len(gone) >= c:
            raise GenomeError(f"remove: stage {i} has {c} channels; cannot remove {gone}")
        keep = torch.tensor([k for k in range(c) if k not in set(gone)])
        prefix = f"stages.{i}."
        for key in [k for k in state if k.startswith(prefix)]:
            tensor = state[key]
            if key.endswith("conv.weight"):
                tensor = tensor[keep]
                if not key.startswith(prefix + "input."):
                    tensor = tensor[:, keep]
            elif key.rsplit(".", 1)[-1] in _BN:
                tensor = tensor[keep]
            state[key] = tensor
        after = f"stages.{i + 1}.input.conv.weight" if i + 1 < len(stages) else "head.weight"
        state[after] = state[after][:, keep]
        stages[i] = dataclasses.replace(stages[i], channels=c - len(gone))
    pruned = dataclasses.replace(genome, stages=tuple(stages))
    return pruned, {k: v.contiguous() for k, v in state.items()}


__all__ = ["groups", "prune"]
