"""A NAS-Bench-201 genome decoded into torch: the benchmark's ``TinyNetwork`` with its ``InferCell``.

The layers, their order and their hyper-parameters are the benchmark's (``cell_operations.py``,
``cell_infers/tiny_network.py`` of Dong & Yang's code), so a cell has the parameter count its
table lists. Two things differ, neither of which changes a 32x32 network:

- the stem reads any number of input channels (the benchmark's reads 3);
- the reduction block's shortcut pools with ``ceil_mode=True``, so that on an odd side it gives
  the same ceil(H / 2) as the stride-2 convolution beside it (7x7: both 4x4; floored, the
  shortcut would give 3x3 and the sum would fail). On an even side ceil and floor agree, and
  an edge window averages only the pixels it covers (the pooling has no padding).

State-dict keys name stable positions: ``cells.{k}`` is the k-th block of the benchmark's
``cells`` list (reduction blocks included, at k = N and 2N + 1), and an edge's layers sit under
``cells.{k}.edges.{e}.{op}``, so a mutation of one edge leaves every other key as it was and the
changed edge's layers (a 3x3 become 1x1, say) never take the old op's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from genomes.nb201.genome import CONV_KERNELS, EDGES, NODES, STEM_KERNEL, stage_channels


class ReLUConvBN(nn.Module):
    """ReLU, bias-free convolution, batch norm (affine): the benchmark's ``ReLUConvBN``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.relu(x)))


class Zero(nn.Module):
    """The "none" op: the input times zero, as the benchmark's ``Zero`` (stride 1, same channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def edge_op(op: str, channels: int) -> nn.Module:
    """The module of one cell edge (channels in = channels out, stride 1, so no preprocessing)."""
    if op in CONV_KERNELS:
        k = CONV_KERNELS[op]
        return ReLUConvBN(channels, channels, k, 1, k // 2)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if op == "skip_connect":
        return nn.Identity()
    if op == "none":
        return Zero()
    raise ValueError(f"op: unknown NAS-Bench-201 op {op!r}")


class Edge(nn.Module):
    """One edge; its op is registered under the op's name, so its keys say which op they belong to."""

    def __init__(self, op: str, channels: int) -> None:
        super().__init__()
        self.name = op
        self.add_module(op, edge_op(op, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.name)(x)


class Cell(nn.Module):
    """The benchmark's ``InferCell`` at stride 1: node j is the sum of its incoming edges; node 3 is the output."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(Edge(op, channels) for op in ops)
        self.incoming = [[(e, source) for e, (source, t) in enumerate(EDGES) if t == target]
                         for target in range(1, NODES)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for incoming in self.incoming:
            total = None
            for e, source in incoming:
                value = self.edges[e](nodes[source])
                total = value if total is None else total + value
            nodes.append(total)
        return nodes[-1]


class ResNetBasicblock(nn.Module):
    """The benchmark's reduction block: two 3x3 ReLU-conv-BNs (the first of stride 2) plus a pooled 1x1 shortcut.

    The shortcut's 2x2 average pooling uses ``ceil_mode=True`` so that odd sides agree with the
    stride-2 convolution (see the module docstring); at even sides it is the benchmark's.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(in_channels, out_channels, 3, 2, 1)
        self.conv_b = ReLUConvBN(out_channels, out_channels, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Net(nn.Module):
    """Stem, three stages of ``cells`` cells at C, 2C, 4C with a reduction block between stages,
    batch norm + ReLU, global average pooling, linear: the benchmark's ``TinyNetwork``."""

    def __init__(self, ops: Sequence[str], in_channels: int, num_classes: int, channels: int, cells: int) -> None:
        super().__init__()
        widths = stage_channels(channels)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], STEM_KERNEL, padding=STEM_KERNEL // 2, bias=False),
            nn.BatchNorm2d(widths[0]),
        )
        blocks: list[nn.Module] = []
        for s, c in enumerate(widths):
            if s:
                blocks.append(ResNetBasicblock(widths[s - 1], c))
            blocks.extend(Cell(ops, c) for _ in range(cells))
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)
        # (block index, that block's output) -> output, applied after every cell and reduction block;
        # for a channel probe (genomes.pruning.FisherProbe); this kind has no pruning groups yet
        self.vertex_hook: Callable[[int, torch.Tensor], Any] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for k, block in enumerate(self.cells):
            x = block(x)
            if self.vertex_hook is not None:
                x = self.vertex_hook(k, x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(x.flatten(1))
