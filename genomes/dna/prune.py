"""Channel pruning of a trained DNA network: which channels may go, what each costs, the surgery.

A *group* is the channels one backbone convolution sets: the vertex it writes and every vertex
after it joined by identity backbone edges (they carry the same channels). Removing channel j of
a group zeroes it at each of its vertices: the convolution loses output j, its batch norms lose
j, and whatever reads the group (the next convolutions, the head) loses input j.

Skips add channels by position (``genomes.dna.net._fit`` pads or cuts), so in a group that a skip
enters or leaves, taking out channel j < last would shift the channels after it against the
skip's: there only the last channel may go, and the pruned net then computes exactly what the
masked one did (kept channels come first, as they already are). Groups no skip touches may lose
any channel. The pruned network is a valid DNA again, its weights the kept slices.

"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import torch

from genomes.base import GenomeError
from genomes.dna.genome import DNA
from genomes.pruning import Group


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
        out.append(Group(id=conv.id, vertices=members, channels=channels[conv.dst],
                         suffix_only=bool(touched.intersection(members)), cost=cost))
    return out


def prune(dna: DNA, state: Mapping[str, torch.Tensor], remove: Mapping[int, list[int]],
          input_shape: tuple[int, int, int], num_classes: int) -> tuple[DNA, dict[str, torch.Tensor]]:
    """``dna`` without the channels ``remove`` names (conv edge id -> channel indices), and the weights
    cut to match. Raises ``GenomeError`` for a channel that may not go (a group would be empty, or a
    channel before the last of a group a skip touches)."""
    by_conv = {g.id: g for g in groups(dna, input_shape, num_classes)}
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


__all__ = ["groups", "prune"]
