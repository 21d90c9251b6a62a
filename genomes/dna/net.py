"""A DNA decoded into a torch module (genomes/dna/genome.py knows no torch, so evolving costs no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from genomes.base import Inheritance, Mutation, inherit_weights
from genomes.dna.genome import DNA, Edge
from genomes.dna.mutations import widening_run


class BnRelu(nn.Module):
    """A ``bn_relu`` vertex's activation; a module so its parameters are named "vertices.v<id>.bn.*"."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()  # a module (no parameters, no key), so an activation gene can swap it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


@dataclass(frozen=True)
class _Step:
    vertex: int
    src: int
    conv: str | None
    skips: tuple[tuple[int, str | None], ...]  # (source vertex, gate key or None)
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
        self.gates = nn.ParameterDict({f"e{e.id}": nn.Parameter(torch.ones(())) for e in dna.skips() if e.gated})
        backbone = dna.backbone()
        skips_into: dict[int, list[tuple[int, str | None]]] = {v.id: [] for v in dna.vertices}
        for edge in dna.skips():
            skips_into[edge.dst].append((edge.src, f"e{edge.id}" if edge.gated else None))
        self.vertex_hook = None  # (vertex id, value) -> value, applied to every vertex's value (genomes.dna.prune)
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
            for src, gate in step.skips:
                skip = _fit(values[src], y.shape[-2:], step.channels)
                y = y + (self.gates[gate] * skip if gate else skip)
            values[step.vertex] = self.vertices[step.activation](y) if step.activation else y
            if self.vertex_hook is not None:
                values[step.vertex] = self.vertex_hook(step.vertex, values[step.vertex])
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
        x = x.index_select(2, _nearest(x.shape[-2], size[0], x.device))
        x = x.index_select(3, _nearest(x.shape[-1], size[1], x.device))
    have = x.shape[1]
    if have > channels:
        return x[:, :channels]
    if have < channels:
        return F.pad(x, (0, 0, 0, 0, 0, channels - have))
    return x


def _nearest(have: int, want: int, device: torch.device) -> torch.Tensor:
    """The rows ``F.interpolate(mode="nearest")`` picks, as its kernel computes them (float32 scale, floor):
    the same values, as a gather that every exporter translates alike (ONNX's Resize rounds otherwise)."""
    scale = torch.as_tensor(have, dtype=torch.float32) / want  # as_tensor: under tracing `have` is a tensor
    index = torch.floor(torch.arange(want, dtype=torch.float32) * scale).long().clamp(max=have - 1)
    return index.to(device)


def morph(dna: DNA, module: DNANet, parent_state: Mapping[str, Any], mutation: Mutation | None) -> Inheritance:
    """Inherit what matches by key and shape; then, after a function-preserving mutation (its params say
    ``preserving``), set the new or reshaped tensors so that the child computes its parent's function
    (exactly in eval mode: batch norm uses its running statistics there).
    """
    inheritance = inherit_weights(module, parent_state)
    if mutation is None or not mutation.params.get("preserving"):
        return inheritance
    p, state = mutation.params, module.state_dict()
    derived: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if mutation.name in ("insert-convolution", "insert-one-to-one"):
            if mutation.name == "insert-convolution":
                nn.init.dirac_(state[f"edges.e{p['edge']}.weight"])
            _identity_bn(state, p["vertex"])
        elif mutation.name == "add-skip":
            state[f"gates.e{p['edge']}"].zero_()
        elif mutation.name == "filter-size":
            derived = _padded_kernel(state, parent_state, f"edges.e{p['edge']}.weight")
        elif mutation.name == "alter-number-of-channels":
            derived = _widened(dna, state, parent_state, p)
        for key, value in derived.items():
            state[key].copy_(value)
    module.load_state_dict(state)
    params = dict(module.named_parameters())
    gained = [k for k in derived if k in params]
    return Inheritance(
        tensors=inheritance.tensors + len(gained), tensors_total=inheritance.tensors_total,
        elements=inheritance.elements + sum(params[k].numel() for k in gained),
        elements_total=inheritance.elements_total,
    )


def _identity_bn(state: dict[str, torch.Tensor], vertex: int) -> None:
    """A fresh batch norm that passes its input through in eval mode (running mean 0, variance 1)."""
    key = f"vertices.v{vertex}.bn"
    if f"{key}.weight" in state:
        eps = 1e-5  # nn.BatchNorm2d's default
        state[f"{key}.weight"].fill_((1.0 + eps) ** 0.5)
        state[f"{key}.bias"].zero_()


def _padded_kernel(state, parent_state, key: str) -> dict[str, torch.Tensor]:
    old, new = parent_state[key], torch.zeros_like(state[key])
    (kh, kw), (nh, nw) = old.shape[-2:], new.shape[-2:]
    top, left = (nh - kh) // 2, (nw - kw) // 2
    new[..., top:top + kh, left:left + kw] = old
    return {key: new}


def _widened(dna: DNA, state, parent_state, p: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Net2WiderNet: unit k >= old copies unit m(k); each consumer splits a unit's outgoing weights among
    its copies by random shares that sum to one (exact, and unequal so that the copies drift apart)."""
    import random

    old, new, rng = p["old"], p["new"], random.Random(p["seed"])
    source = list(range(old)) + [rng.randrange(old) for _ in range(new - old)]
    share = torch.ones(new)
    for unit in range(old):
        copies = [k for k in range(new) if source[k] == unit]
        if len(copies) > 1:
            draws = torch.tensor([rng.uniform(0.25, 1.0) for _ in copies])
            share[copies] = draws / draws.sum()
    index = torch.tensor(source)
    edge = next(e for e in dna.edges if e.id == p["edge"])
    run = widening_run(dna, edge)
    out: dict[str, torch.Tensor] = {}
    out[f"edges.e{edge.id}.weight"] = parent_state[f"edges.e{edge.id}.weight"][index]
    for vertex in run:
        prefix = f"vertices.v{vertex}.bn."
        for name in ("weight", "bias", "running_mean", "running_var"):
            if prefix + name in parent_state:
                out[prefix + name] = parent_state[prefix + name][index]
    after = [e for e in dna.edges if not e.skip and e.src == run[-1]]
    if after and after[0].is_conv:
        key = f"edges.e{after[0].id}.weight"
        out[key] = parent_state[key][:, index] * share[None, :, None, None].to(parent_state[key].dtype)
    if run[-1] == dna.output_id:
        key = f"head.h{dna.head_id}.weight"
        out[key] = parent_state[key][:, index] * share[None, :].to(parent_state[key].dtype)
    return out
