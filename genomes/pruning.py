"""Channel pruning, whatever the genome: a kind's channel groups, the surgery, the Fisher probe.

A *group* is a set of channels that go together: in a DNA, the channels one backbone convolution
sets (``genomes.dna.prune``); in a Genetic CNN, a stage's channels, which every node of the stage
shares and sums (``genomes.gcnn.prune``). Removing channel j of a group zeroes it wherever the group
is masked; ``prune`` then cuts it out of every tensor, leaving a valid genome of the same kind that
computes exactly what the masked network did.

``FisherProbe`` measures, while the network trains, Theis et al. 2018's estimate of the loss
increase from removing each channel: per example, (sum over the channel's activations of
activation x gradient)², halved and averaged. It works through the module's ``vertex_hook``
(``genomes.dna.net.DNANet``, ``genomes.gcnn.net.GeneticCNNNet``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from genomes.base import GenomeError


@dataclass(frozen=True)
class Group:
    id: int  # DNA: the backbone convolution's edge id; Genetic CNN: the stage's index
    vertices: tuple[int, ...]  # where its channels are masked: DNA vertex ids; Genetic CNN: (stage index,)
    channels: int
    suffix_only: bool  # a skip enters or leaves it: only the last channel may go
    cost: int  # parameters one channel of the group holds (its row, batch norms, what reads it)


def groups(genome: Any, input_shape: tuple[int, int, int], num_classes: int) -> list[Group]:
    """The prunable channel groups of ``genome`` (a DNA or a Genetic CNN)."""
    return _kind(genome).groups(genome, input_shape, num_classes)


def prune(genome: Any, state: Mapping[str, torch.Tensor], remove: Mapping[int, list[int]],
          input_shape: tuple[int, int, int], num_classes: int) -> tuple[Any, dict[str, torch.Tensor]]:
    """``genome`` without the channels ``remove`` names (group id -> channel indices), and the weights cut
    to match; raises ``GenomeError`` for a channel that may not go."""
    return _kind(genome).prune(genome, state, remove, input_shape, num_classes)


PRUNABLE = ("dna", "gcnn")
"""The genome kinds whose channel groups are known (NAS-Bench-201's cells have none yet)."""


def _kind(genome: Any) -> Any:
    from genomes.dna import prune as dna_prune
    from genomes.gcnn import prune as gcnn_prune

    by_kind = {"dna": dna_prune, "gcnn": gcnn_prune}
    kind = getattr(genome, "kind", None)
    if kind not in by_kind:
        raise GenomeError(f"pruning: no channel groups known for genome kind {kind!r} "
                          f"(known: {', '.join(PRUNABLE)})")
    return by_kind[kind]


class FisherProbe:
    """Accumulates each group's per-channel Fisher estimate while ``net`` trains.

    Installed as ``net.vertex_hook`` (called with a vertex key and its value): every vertex of a group is multiplied by one all-ones mask
    per forward pass (shape (N, C, 1, 1), shared by the group's vertices), whose gradient is, per
    example and channel, the sum of activation x gradient over the group's activations."""

    def __init__(self, net: Any, found: list[Group]) -> None:
        self.net = net
        self.group_of = {v: g.id for g in found for v in g.vertices}
        self.scores = {g.id: torch.zeros(g.channels, dtype=torch.float64) for g in found}
        self.examples = 0
        self._masks: dict[int, torch.Tensor] = {}
        net.vertex_hook = self
        self._pre = net.register_forward_pre_hook(self._new_pass)

    def _new_pass(self, _module: Any, args: tuple[Any, ...]) -> None:
        self._masks = {}
        if self.net.training:
            self.examples += int(args[0].shape[0])

    def __call__(self, vertex: int, value: torch.Tensor) -> torch.Tensor:
        group = self.group_of.get(vertex)
        if group is None or not self.net.training or not torch.is_grad_enabled():
            return value
        mask = self._masks.get(group)
        if mask is None:
            mask = torch.ones(value.shape[0], value.shape[1], 1, 1, device=value.device, dtype=value.dtype,
                              requires_grad=True)
            mask.register_hook(lambda grad, c=group: self._add(c, grad))
            self._masks[group] = mask
        return value * mask

    def _add(self, group: int, grad: torch.Tensor) -> None:
        self.scores[group] += grad.detach().double().pow(2).sum(dim=(0, 2, 3)).cpu()

    def estimates(self) -> dict[int, torch.Tensor]:
        """Group -> the estimated loss increase from removing each of its channels."""
        n = max(1, self.examples)
        return {group: s / (2 * n) for group, s in self.scores.items()}

    def remove(self) -> None:
        self.net.vertex_hook = None
        self._pre.remove()


__all__ = ["FisherProbe", "Group", "groups", "prune"]
