"""A search space of your own: multilayer perceptrons for scikit-learn's digits as flat vectors.

An individual is a stack of hidden layers (1 to 4, each 16 to 128 wide), an activation and a dropout
rate. The class keeps evolve's genome protocol (``genomes.base.Genome``; the optional methods come from
``genomes.base.GenomeBase``), and the fitness trains the child it is given with Adam and returns its
validation accuracy. Check the class, then search::

    evolve doctor --genome examples.mlp_space:MLPSpace --input-shape 1,8,8
    python examples/mlp_space.py                 # a small local run: well under a minute on 2 cores

A worker imports both by name (``examples.mlp_space:MLPSpace``, ``examples.mlp_space:fitness`` from the
repository's root), so on a Ray cluster the module must be importable on every node.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import sys
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genomes import GenomeBase, GenomeError, Mutation, SearchSpace

WIDTHS = (16, 32, 64, 128)
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}
DROPOUTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
MAX_DEPTH = 4
SHAPE = (1, 8, 8)
BATCHES = 150
BATCH_SIZE = 64


@dataclass(frozen=True)
class MLPSpace(GenomeBase):
    """Hidden widths, activation, dropout: all a network of this space is."""

    kind: ClassVar[str] = "examples.mlp_space:MLPSpace"  # the name a worker imports it by

    widths: tuple[int, ...]
    activation: str = "relu"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= len(self.widths) <= MAX_DEPTH or any(w not in WIDTHS for w in self.widths):
            raise GenomeError(f"widths: expected 1 to {MAX_DEPTH} of {list(WIDTHS)}, got {list(self.widths)!r}")
        if self.activation not in ACTIVATIONS:
            raise GenomeError(f"activation: expected one of {list(ACTIVATIONS)}, got {self.activation!r}")
        if self.dropout not in DROPOUTS:
            raise GenomeError(f"dropout: expected one of {list(DROPOUTS)}, got {self.dropout!r}")

    @classmethod
    def initial(cls, rng: random.Random, space: SearchSpace) -> MLPSpace:
        """One small hidden layer: growth is the search's business."""
        return cls((rng.choice(WIDTHS[:2]),), rng.choice(list(ACTIVATIONS)), 0.0)

    @classmethod
    def sample(cls, rng: random.Random, space: SearchSpace) -> MLPSpace:
        """A uniform draw: depth, then each width, the activation and the dropout."""
        for _ in range(100):
            genome = cls(tuple(rng.choice(WIDTHS) for _ in range(rng.randint(1, MAX_DEPTH))),
                         rng.choice(list(ACTIVATIONS)), rng.choice(DROPOUTS))
            if space.admits(genome):
                return genome
        return cls.initial(rng, space)

    def mutate(self, rng: random.Random, space: SearchSpace) -> tuple[MLPSpace, Mutation]:
        """Add or remove a layer, resize one, or change the activation or the dropout (redrawn while the
        child breaks the space's bounds)."""
        for _ in range(20):
            child, mutation = self._change(rng)
            if space.admits(child):
                return child, mutation
        return self, Mutation("identity", {"reason": "every try broke a bound"})

    def _change(self, rng: random.Random) -> tuple[MLPSpace, Mutation]:
        moves = ["resize", "activation", "dropout"] + ["add"] * (len(self.widths) < MAX_DEPTH) \
            + ["remove"] * (len(self.widths) > 1)
        move = rng.choice(moves)
        if move == "add":
            at = rng.randrange(len(self.widths) + 1)
            width = rng.choice(WIDTHS)
            return replace(self, widths=self.widths[:at] + (width,) + self.widths[at:]), \
                Mutation("add-layer", {"at": at, "width": width})
        if move == "remove":
            at = rng.randrange(len(self.widths))
            return replace(self, widths=self.widths[:at] + self.widths[at + 1:]), Mutation("remove-layer", {"at": at})
        if move == "resize":
            at = rng.randrange(len(self.widths))
            width = rng.choice([w for w in WIDTHS if w != self.widths[at]])
            return replace(self, widths=self.widths[:at] + (width,) + self.widths[at + 1:]), \
                Mutation("resize", {"at": at, "old": self.widths[at], "new": width})
        if move == "activation":
            new = rng.choice([a for a in ACTIVATIONS if a != self.activation])
            return replace(self, activation=new), Mutation("activation", {"old": self.activation, "new": new})
        new_rate = rng.choice([d for d in DROPOUTS if d != self.dropout])
        return replace(self, dropout=new_rate), Mutation("dropout", {"old": self.dropout, "new": new_rate})

    def to_module(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(np.prod(input_shape))
        for hidden in self.widths:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[self.activation](), nn.Dropout(self.dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)

    def param_count(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        sizes = [int(np.prod(input_shape)), *self.widths, num_classes]
        return sum(a * b + b for a, b in zip(sizes, sizes[1:]))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "widths": list(self.widths), "activation": self.activation,
                "dropout": self.dropout}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MLPSpace:
        if not isinstance(data, Mapping) or data.get("kind") != cls.kind:
            raise GenomeError(f"kind: expected {cls.kind!r}, got {data!r:.80}")
        widths = data.get("widths")
        if not isinstance(widths, list):
            raise GenomeError(f"widths: expected a list, got {widths!r}")
        return cls(tuple(widths), data.get("activation", "relu"), data.get("dropout", 0.0))

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def describe(self) -> str:
        hidden = "-".join(map(str, self.widths))
        return f"mlp {hidden}, {self.activation}, dropout {self.dropout:g}"

    def stats(self, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, int | float | str]:
        return {"depth": len(self.widths), "params": self.param_count(input_shape, num_classes),
                "activation": self.activation, "dropout": self.dropout}


@functools.lru_cache(maxsize=1)
def data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """scikit-learn's 1,797 digits, scaled to [0, 1], split 1,200 train / 597 validation by ``seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x = torch.from_numpy((digits.images[order] / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(digits.target[order].astype(np.int64))
    return x[:1200], y[:1200], x[1200:], y[1200:]


def fitness(model: nn.Module, inherited, rng: torch.Generator, context) -> tuple[float, dict[str, float]]:
    """Train ``model`` for ``BATCHES`` Adam steps and return its validation accuracy."""
    x_train, y_train, x_val, y_val = data()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(BATCHES):
        batch = torch.randint(0, len(y_train), (BATCH_SIZE,), generator=rng)
        loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    return accuracy, {"val_accuracy": accuracy, "final_loss": loss.item()}


def main(store: str = "runs/mlp-space", executor: str = "local") -> int:
    import evolve

    torch.set_num_threads(1)
    run = evolve.run(store=store, genome="examples.mlp_space:MLPSpace", fitness="examples.mlp_space:fitness",
                     input_shape=SHAPE, num_classes=10, population=8, steps=24, workers=2, max_params=50_000,
                     executor=executor, on_progress=lambda done: print(f"\r{done}/32 individuals", end="",
                                                                       file=sys.stderr))
    best = run.best()
    print(f"\nbest individual {best.step}: validation {best.fitness:.2%}, {best.metrics.params:,} parameters: "
          f"{MLPSpace.from_json(best.genome).describe()}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))  # examples.mlp_space
    sys.exit(main(*sys.argv[1:]))
