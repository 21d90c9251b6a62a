"""Evolve networks for a task evolve's own trainer does not cover: regression on in-memory NumPy images.

Each 1x16x16 image holds one to five bright Gaussian spots on noise; the target is how many (a real
number: the networks have one output, trained on mean squared error). The fitness function trains
the child it is given for a few SGD batches and returns minus its validation error (evolve
maximises), with the error and R² as metrics. Any task works the same way: write
``fitness(model, inherited, rng, context)`` (``evolve.training.fitness``) and give the networks' input shape
and number of outputs.

    python examples/regression.py              # a small local run: about a minute on 2 cores

A worker imports the function by its name (``examples.regression:fitness`` from the repository's
root), so on a Ray cluster the module must be importable on every node.
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import torch
import torch.nn.functional as F

SHAPE = (1, 16, 16)
BATCHES = 40
BATCH_SIZE = 32


@functools.lru_cache(maxsize=1)
def data(train: int = 768, val: int = 256, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val): spots on noise, and how many spots; fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    n = train + val
    counts = rng.integers(1, 6, size=n)
    yy, xx = np.mgrid[0:SHAPE[1], 0:SHAPE[2]]
    images = rng.normal(0.0, 0.3, size=(n, *SHAPE)).astype(np.float32)
    for i, count in enumerate(counts):
        for cy, cx in rng.uniform(2, SHAPE[1] - 2, size=(count, 2)):
            images[i, 0] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0).astype(np.float32)
    x, y = torch.from_numpy(images), torch.from_numpy(counts.astype(np.float32))
    return x[:train], y[:train], x[train:], y[train:]


def fitness(model: torch.nn.Module, inherited, rng: torch.Generator, context) -> tuple[float, dict[str, float]]:
    """Train ``model`` briefly (it already holds what it inherits) and return minus its validation MSE."""
    x_train, y_train, x_val, y_val = data()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    for _ in range(BATCHES):
        batch = torch.randint(0, len(y_train), (BATCH_SIZE,), generator=rng)
        loss = F.mse_loss(model(x_train[batch]).squeeze(1), y_train[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        mse = F.mse_loss(model(x_val).squeeze(1), y_val).item()
    return -mse, {"val_mse": mse, "r2": 1.0 - mse / y_val.var().item()}


def main(store: str = "runs/regression") -> int:
    import evolve

    torch.set_num_threads(1)
    run = evolve.run(store=store, fitness="examples.regression:fitness", input_shape=SHAPE, num_classes=1,
                     population=6, steps=30, workers=2, max_params=30_000, executor="local",
                     on_progress=lambda done: print(f"\r{done}/36 individuals", end="", file=sys.stderr))
    best = run.best()
    print(f"\nbest individual {best.step}: validation MSE {best.metrics.model_extra['val_mse']:.3f}, "
          f"R² {best.metrics.model_extra['r2']:.3f}, {best.metrics.params:,} parameters "
          f"(predicting the mean: MSE {data()[3].var().item():.3f})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))  # examples.regression
    sys.exit(main(*sys.argv[1:]))
