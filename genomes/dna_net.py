"""A DNA decoded into a torch module (genomes/dna.py knows no torch, so evolving costs no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genomes.dna import DNA, Edge


class BnRelu(nn.Module):
    """A ``bn_relu`` vertex's activation; a module so its parameters are named "vertices.v<id>.bn.*"."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(x))


@dataclass(frozen=True)
class _Step:
    vertex: int
    src: int
    conv: str | None
    skips: tuple[int, ...]
    channels: int
    activation: str | None


class DNANet(nn.Module):
    """The decoded network: vertices in backbone order, then global average pooling and a linear head."""

    def __init__(self, dna: DNA, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels = dna.channels(input_shape[0])
        self.edges = nn.ModuleDict()
        self.vertices = nn.ModuleDict()
        self.head = nn.ModuleDict({f"h{dna.head_id}": nn.Linear(channels[dna.output_id], num_classes)})
        for edge in dna.convs():
            self.edges[f"e{edge.id}"] = _conv(edge, channels[edge.src])
        for vertex in dna.vertices:
            if vertex.activation == "bn_relu":
                self.vertices[f"v{vertex.id}"] = BnRelu(channels[vertex.id])
        backbone = dna.backbone()
        skips_into: dict[int, list[int]] = {v.id: [] for v in dna.vertices}
        for edge in dna.skips():
            skips_into[edge.dst].append(edge.src)
        self._input = dna.input_id
        self._output = dna.output_id
        self._head = f"h{dna.head_id}"
        self._steps = [
            _Step(
                vertex=v.id,
                src=backbone[v.id].src,
                conv=f"e{backbone[v.id].id}" if backbone[v.id].is_conv else None,
                skips=tuple(skips_into[v.id]),
                channels=channels[v.id],
                activation=f"v{v.id}" if v.activation == "bn_relu" else None,
            )
            for v in dna.vertices[1:]
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self._input: x}
        for step in self._steps:
            primary = values[step.src]
            y = self.edges[step.conv](primary) if step.conv else primary
            for src in step.skips:
                y = y + _fit(values[src], y.shape[-2:], step.channels)
            values[step.vertex] = self.vertices[step.activation](y) if step.activation else y
        pooled = values[self._output].mean(dim=(2, 3))
        return self.head[self._head](pooled)


def _conv(edge: Edge, in_channels: int) -> nn.Conv2d:
    assert edge.kernel is not None and edge.channels is not None and edge.stride is not None
    kh, kw = edge.kernel
    padding = (kh // 2, kw // 2)
    conv = nn.Conv2d(in_channels, edge.channels, (kh, kw), edge.stride, padding=padding, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    return conv


def _fit(x: torch.Tensor, size: torch.Size, channels: int) -> torch.Tensor:
    """The paper's resolution of a skip input: nearest interpolation to the size, pad or cut channels."""
    if x.shape[-2:] != size:
        x = F.interpolate(x, size=tuple(size), mode="nearest")
    have = x.shape[1]
    if have > channels:
        return x[:, :channels]
    if have < channels:
        return F.pad(x, (0, 0, 0, 0, 0, channels - have))
    return x
