"""A Genetic-CNN genome decoded into a torch module (genomes/gcnn/genome.py knows no torch)."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import nn

from genomes.gcnn.genome import DROPOUT, KERNEL, Stage, predecessors


class SeededDropout(nn.Module):
    """Dropout drawing its masks from ``generator``, which the trainer sets for each training.

    ``nn.Dropout`` draws from torch's process-global generator, which workers running as threads of
    one process share, so their children's training would depend on how the threads interleave.
    Without a generator (a module used outside the trainer) it draws from the global one.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ConvNode(nn.Module):
    """A node's operation: 3x3 convolution, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, KERNEL, padding=KERNEL // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()  # a module (no parameters, no key), so an activation gene can swap it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class StageModule(nn.Module):
    """One decoded stage; surviving nodes are kept under their 1-based number ("nodes.3").

    A stage with no surviving node is a single convolution: the input node joined straight to
    the output node is one layer (the input node's), not two stacked ones (version 1: two).
    """

    def __init__(self, stage: Stage, in_channels: int, version: int = 2) -> None:
        super().__init__()
        c = stage.channels
        self.input = ConvNode(in_channels, c)
        self.order = sorted(stage.active())
        self.nodes = nn.ModuleDict({str(k): ConvNode(c, c) for k in self.order})
        self.output = ConvNode(c, c) if stage.convs_after_input(version) else None
        self.out_id = stage.nodes + 1
        self.preds = predecessors(stage.edges())

    def forward(self, x: torch.Tensor, hook: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``hook``: applied to every node's output (``genomes.pruning`` masks a stage's channels so)."""
        hook = hook or _same
        outs = {0: hook(self.input(x))}
        if self.output is None:
            return outs[0]
        for k in self.order:
            outs[k] = hook(self.nodes[str(k)](_sum(outs, self.preds[k])))
        return hook(self.output(_sum(outs, self.preds[self.out_id])))


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _sum(outs: dict[int, torch.Tensor], preds: tuple[int, ...]) -> torch.Tensor:
    total = outs[preds[0]]
    for p in preds[1:]:
        total = total + outs[p]
    return total


class GeneticCNNNet(nn.Module):
    """Stages with 2x2 max pooling after each, then global average pooling, dropout, linear."""

    def __init__(self, stages: Sequence[Stage], in_channels: int, num_classes: int, version: int = 2) -> None:
        super().__init__()
        modules = []
        for stage in stages:
            modules.append(StageModule(stage, in_channels, version))
            in_channels = stage.channels
        self.stages = nn.ModuleList(modules)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)  # ceil: a 1x1 map stays 1x1, never 0x0
        self.dropout = SeededDropout(DROPOUT)
        self.head = nn.Linear(in_channels, num_classes)
        self.vertex_hook = None  # (stage index, a node's output) -> output, for every node (genomes.pruning)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, stage in enumerate(self.stages):
            hook = None if self.vertex_hook is None else functools.partial(self.vertex_hook, i)
            x = self.pool(stage(x, hook))
        return self.head(self.dropout(x.mean(dim=(2, 3))))
