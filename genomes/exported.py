"""A model written by ``evolve export-model``, rebuilt from its folder with torch and ``genomes`` alone.

Where a model is served, ``pip install ./genomes`` installs this package as its own distribution
(``evolve-genomes``: torch and safetensors, nothing of evolve).

The folder holds ``model.json`` and one safetensors file per member::

    {"format": 1, "combine": "logits" | "softmax-mean",
     "input": {"shape": [C, H, W], "pixels": "...", "scale": 255.0, "mean": [...], "std": [...]},
     "num_classes": 10, "classes": [...] | null,
     "members": [{"genome": {...}, "weights": "member-0.safetensors"}, ...],
     "test_accuracy": 0.985, "source": {...}}

``load_model(folder)`` returns a plain ``torch.nn.Module`` that takes pixels scaled to [0, 1]
(raw values / ``scale``), float32 (N, C, H, W), normalises them as the run did, and returns class
scores: a single network's logits (``combine`` "logits") or the members' softmax outputs averaged
(``combine`` "softmax-mean", an ensemble). Either way the prediction is the arg-max.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genomes import GenomeError, genome_from_json

FORMAT = 1
MANIFEST = "model.json"
COMBINE = ("logits", "softmax-mean")


class Normalise(nn.Module):
    """(x - mean) / std per channel, as the run normalised its splits."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ExportedModel(nn.Module):
    """Pixels in [0, 1] -> class scores (see the module docstring)."""

    def __init__(self, members: list[nn.Module], mean: list[float], std: list[float], combine: str) -> None:
        super().__init__()
        if combine not in COMBINE or (combine == "logits" and len(members) != 1):
            raise ValueError(f"combine: {combine!r} does not fit {len(members)} member(s); known: {', '.join(COMBINE)}")
        self.normalise = Normalise(mean, std)
        self.members = nn.ModuleList(members)
        self.combine = combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        if self.combine == "logits":
            return self.members[0](x)
        return torch.stack([F.softmax(m(x).float(), 1) for m in self.members]).mean(0)


def read_manifest(folder: str) -> dict[str, Any]:
    """``folder``'s model.json, checked; a ``GenomeError`` names the file and the bad field."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise GenomeError(f"{path}: not found (a folder written by evolve export-model holds it)") from None
    except json.JSONDecodeError as exc:
        raise GenomeError(f"{path}: not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GenomeError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}; "
                          f"this loader reads format {FORMAT}")
    spec = manifest.get("input")
    if not isinstance(spec, dict) or not isinstance(spec.get("shape"), list) or len(spec["shape"]) != 3:
        raise GenomeError(f"{path}: input.shape must be [C, H, W], got {spec!r}")
    channels = spec["shape"][0]
    for name in ("mean", "std"):
        values = spec.get(name)
        if not isinstance(values, list) or len(values) != channels:
            raise GenomeError(f"{path}: input.{name} must be {channels} numbers (one a channel), got {values!r}")
    members = manifest.get("members")
    if not isinstance(members, list) or not members:
        raise GenomeError(f"{path}: members must be a non-empty list, got {members!r}")
    if manifest.get("combine") not in COMBINE:
        raise GenomeError(f"{path}: combine {manifest.get('combine')!r}; known: {', '.join(COMBINE)}")
    return manifest


def load_model(folder: str, device: str | torch.device = "cpu") -> ExportedModel:
    """The exported model in ``folder``, in eval mode on ``device``."""
    from safetensors.torch import load_file

    manifest = read_manifest(folder)
    shape = tuple(int(d) for d in manifest["input"]["shape"])
    members = []
    for i, member in enumerate(manifest["members"]):
        genome = genome_from_json(member.get("genome"))
        module = genome.to_module(shape, int(manifest["num_classes"]))
        path = os.path.join(folder, str(member.get("weights")))
        if not os.path.isfile(path):
            raise GenomeError(f"{os.path.join(folder, MANIFEST)}: members[{i}].weights: {path} not found")
        module.load_state_dict(load_file(path))
        members.append(module)
    spec = manifest["input"]
    model = ExportedModel(members, spec["mean"], spec["std"], manifest["combine"])
    return model.to(device).eval()


__all__ = ["FORMAT", "MANIFEST", "ExportedModel", "Normalise", "load_model", "read_manifest"]
