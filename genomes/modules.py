"""What the genes a network carries change in its module: the activation, dropout before the classifier,
the initialisation.

Applied to any genome's module, the built-in kinds' and yours alike, without changing a state-dict key:
activations are swapped where the network builds them as ``nn.ReLU`` modules (every built-in kind
does), dropout is a forward pre-hook on the last ``nn.Linear`` (the classifier), the initialisation
redraws every convolution's and linear layer's weight. ``genomes.exported.load_model`` applies the
activation too, so an exported network computes what was trained.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from genomes.hparams import ACTIVATIONS, INITS


def activation_module(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU}[name]()


def swap_activations(module: nn.Module, name: str) -> int:
    """Replace every ``nn.ReLU`` in ``module`` by ``name``'s activation; how many were replaced."""
    if name == "relu":
        return 0
    swapped = 0
    for parent in list(module.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.ReLU:
                setattr(parent, child_name, activation_module(name))
                swapped += 1
    return swapped


class ClassifierDropout:
    """Dropout on the classifier's input, as a forward pre-hook: no module is added, so no key changes.

    Its masks come from ``generator`` (set by the trainer for each training, as
    ``genomes.gcnn.net.SeededDropout``'s), never torch's process-global generator."""

    def __init__(self, p: float) -> None:
        self.p = p
        self.generator: torch.Generator | None = None

    def __call__(self, layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        if not layer.training or self.p == 0.0:
            return None
        x = inputs[0]
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return (x * keep / (1.0 - self.p), *inputs[1:])


def add_dropout(module: nn.Module, p: float) -> ClassifierDropout | None:
    """Dropout with rate ``p`` before ``module``'s last linear layer (None where it has none, or p is 0)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears or p <= 0:
        return None
    hook = ClassifierDropout(p)
    linears[-1].register_forward_pre_hook(hook)
    return hook


def initialise(module: nn.Module, scheme: str) -> None:
    """Redraw every convolution's and linear layer's weight by ``scheme`` (biases to zero), from torch's
    default generator (the trainer seeds it for each child)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            elif scheme == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(layer.weight)
            else:
                raise ValueError(f"init: expected one of {list(INITS)}, got {scheme!r}")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def apply_architecture_genes(module: nn.Module, genes: Mapping[str, Any]) -> nn.Module:
    """The genes that change what the network computes at inference: the activation (a gene of that name
    whose value is not one of ``ACTIVATIONS`` is your fitness's own business, and left alone)."""
    if genes.get("activation") in ACTIVATIONS:
        swap_activations(module, str(genes["activation"]))
    return module
