"""Channel pruning of a trained DNA network: which channels may go, what each costs, the surgery.

A *group* is the channels one backbone convolution sets: the vertex it writes and every vertex
after it joined by identity backbone edges (they carry the same channels). Removing channel j of
a group zeroes it at each of its vertices: the convolution loses output j, its batch norms lose
j, and whatever reads the group (the next convolutions, the head) loses input j.

Skips add channels by position (``genomes.dna_net._fit`` pads or cuts), so in a group that a skip
enters or leaves, taking out channel j < last would shift the channels after it against the
skip's: there only the last channel may go, and the pruned net then computes exactly what the
masked one did (kept channels come first, as they already are). Groups no skip touches may lose
any channel. The pruned network is a valid DNA again, its weights the kept slices.

``FisherProbe`` measures, while the network trains, Theis et al. 2018's estimate of the loss
increase from removing each channel: per example, (sum over the channel's activations of
activation x gradient)², halved and averaged (``genomes.dna_net.DNANet.vertex_hook``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from genomes.base import GenomeError
from genomes.dna import DNA


@dataclass(frozen=True)
class Group:
    conv: int  # the backbone convolution's edge id
    vertices: tuple[int, ...]  # the vertices carrying its channels, in backbone order
    channels: int
    suffix_only: bool  # a skip enters or leaves it: only the last channel may go
    cost: int  # parameters one channel of the group holds (its row, batch norms, what reads it)


def groups(dna: DNA, input_shape: tuple[int, int, int], num_classes: int) -> list[Group]:
    """The prunable channel groups of ``dna``, in backbone order."""
    backbone = dna.backbone()
    channels = dna.channels(input_shape[0])
    owner: dict[int, int] = {}  # vertex -> the conv edge whose channels it carries
    for vertex in dna.vertices[1:]:
        edge = backbone[vertex.id]
        if edge.is_conv:
            owner[vertex.id] = edge.id
        elif edge.src in owner:
            owner[vertex.id] = owner[edge.src]
    touched = {v for e in dna.skips() for v in (e.src, e.dst)}
    bn = {v.id for v in dna.vertices if v.activation == "bn_relu"}
    out = []
    for conv in dna.convs():
        members = tuple(v.id for v in dna.vertices if owner.get(v.id) == conv.id)
        kh, kw = conv.kernel or (1, 1)
        cost = channels[conv.src] * kh * kw + 2 * len(bn.intersection(members))
        for edge in dna.convs():
            if edge.src in members:
                ekh, ekw = edge.kernel or (1, 1)
                cost += (edge.channels or 0) * ekh * ekw
        if dna.output_id in members:
            cost += num_classes
        out.append(Group(conv=conv.id, vertices=members, channels=channels[conv.dst],
                         suffix_only=bool(touched.intersection(members)), cost=cost))
    return out


def prune(dna: DNA, state: Mapping[str, torch.Tensor], remove: Mapping[int, list[int]],
          input_shape: tuple[int, int, int], num_classes: int) -> tuple[DNA, dict[str, torch.Tensor]]:
    """``dna`` without the channels ``remove`` names (conv edge id -> channel indices), and the weights
    cut to match. Raises ``GenomeError`` for a channel that may not go (a group would be empty, or a
    channel before the last of a group a skip touches)."""
    by_conv = {g.conv: g for g in groups(dna, input_shape, num_classes)}
    state = dict(state)
    edges = {e.id: e for e in dna.edges}
    for conv, channels in remove.items():
        group = by_conv.get(conv)
        if group is None:
            raise GenomeError(f"remove: edge {conv} is not a backbone convolution of this DNA")
        gone = sorted(set(channels))
        if not gone:
            continue
        if gone[0] < 0 or gone[-1] >= group.channels or len(gone) >= group.channels:
            raise GenomeError(f"remove: edge {conv} has {group.channels} channels; cannot remove {gone}")
        if group.suffix_only and gone != list(range(group.channels - len(gone), group.channels)):
            raise GenomeError(f"remove: a skip touches edge {conv}'s channels; only the last ones may go, not {gone}")
        keep = torch.tensor([c for c in range(group.channels) if c not in set(gone)])
        key = f"edges.e{conv}.weight"
        state[key] = state[key][keep]
        for vertex in group.vertices:
            for name in ("weight", "bias", "running_mean", "running_var"):
                bn = f"vertices.v{vertex}.bn.{name}"
                if bn in state:
                    state[bn] = state[bn][keep]
        for edge in dna.convs():
            if edge.src in group.vertices:
                key = f"edges.e{edge.id}.weight"
                state[key] = state[key][:, keep]
        if dna.output_id in group.vertices:
            key = f"head.h{dna.head_id}.weight"
            state[key] = state[key][:, keep]
        edges[conv] = dataclasses.replace(edges[conv], channels=group.channels - len(gone))
    pruned = dataclasses.replace(dna, edges=tuple(edges[e.id] for e in dna.edges))
    return pruned, {k: v.contiguous() for k, v in state.items()}


class FisherProbe:
    """Accumulates each group's per-channel Fisher estimate while ``net`` (a ``DNANet``) trains.

    Installed as ``net.vertex_hook``: every vertex of a group is multiplied by one all-ones mask
    per forward pass (shape (N, C, 1, 1), shared by the group's vertices), whose gradient is, per
    example and channel, the sum of activation x gradient over the group's activations."""

    def __init__(self, net: Any, found: list[Group]) -> None:
        self.net = net
        self.group_of = {v: g.conv for g in found for v in g.vertices}
        self.scores = {g.conv: torch.zeros(g.channels, dtype=torch.float64) for g in found}
        self.examples = 0
        self._masks: dict[int, torch.Tensor] = {}
        self._batch: int | None = None
        net.vertex_hook = self
        self._pre = net.register_forward_pre_hook(self._new_pass)

    def _new_pass(self, _module: Any, args: tuple[Any, ...]) -> None:
        self._masks = {}
        if self.net.training:
            self.examples += int(args[0].shape[0])

    def __call__(self, vertex: int, value: torch.Tensor) -> torch.Tensor:
        conv = self.group_of.get(vertex)
        if conv is None or not self.net.training or not torch.is_grad_enabled():
            return value
        mask = self._masks.get(conv)
        if mask is None:
            mask = torch.ones(value.shape[0], value.shape[1], 1, 1, device=value.device, dtype=value.dtype,
                              requires_grad=True)
            mask.register_hook(lambda grad, c=conv: self._add(c, grad))
            self._masks[conv] = mask
        return value * mask

    def _add(self, conv: int, grad: torch.Tensor) -> None:
        self.scores[conv] += grad.detach().double().pow(2).sum(dim=(0, 2, 3)).cpu()

    def estimates(self) -> dict[int, torch.Tensor]:
        """Group -> the estimated loss increase from removing each of its channels."""
        n = max(1, self.examples)
        return {conv: s / (2 * n) for conv, s in self.scores.items()}

    def remove(self) -> None:
        self.net.vertex_hook = None
        self._pre.remove()


__all__ = ["FisherProbe", "Group", "groups", "prune"]
