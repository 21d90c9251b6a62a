"""The network a user would train instead of running evolve: LeNet-5 with batch norm, trained well.

Every claim of search quality is made against it, at the same split and with the recipe a
practitioner would use (not a constant learning rate, which flatters evolution): LeNet-5's layout
(5x5 conv 6, pool, 5x5 conv 16, pool, 120, 84) with batch norm after each conv, SGD with Nesterov
momentum 0.9, weight decay 5e-4, a one-cycle schedule peaking at 0.1, batch 50, random shifts of
up to 2 pixels, 1,500 batches. On mnist-mini that is about a minute of one core.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from evolve.config import TrainConfig
from genomes.fixed.lenet import LeNet5

RECIPE = TrainConfig(batches=1500, batch_size=50, momentum=0.9, nesterov=True, weight_decay=5e-4,
                     learning_rate=0.1, schedule="one-cycle", warmup=0.3, augment="shift", shift=2)
"""LeNet-5's recipe on MNIST-like data; ``recipe_for`` fits its augmentation to a run's data."""


def recipe_for(train: TrainConfig, channels: int, batches: int = RECIPE.batches, device: str = "cpu") -> TrainConfig:
    """The recipe with the run's augmentation (``train``'s kind and shift); a run that does not augment
    gets what a practitioner would use: shifts of 2 pixels for grey images, crop-flip with 4 pixels of
    padding for colour ones (CIFAR)."""
    if train.augment != "none":
        kind, shift = train.augment, train.shift
    else:
        kind, shift = ("shift", 2) if channels == 1 else ("crop-flip", 4)
    return RECIPE.model_copy(update={"augment": kind, "shift": shift, "batches": batches, "device": device})


def train_lenet(data: Any, seed: int, config: TrainConfig = RECIPE, device: torch.device | None = None,
                on_batches: Any = None) -> dict[str, Any]:
    """Train LeNet-5 on ``data`` (a DeviceData) with ``config``; accuracies, size and compute as plain data.
    ``on_batches``: as ``Trainer.fit`` takes it."""
    from evolve.training.train import Trainer, count_flops

    device = device or data.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LeNet5(data.input_shape, data.num_classes).to(device)
    trainer = Trainer(data, config, device, max_params=10**12)
    fit = trainer.fit(model, config.learning_rate, config.batches, seed, on_batches=on_batches)
    return {
        "model": "lenet5-bn", "seed": seed, "batches": config.batches, "finite": fit.finite,
        "val_accuracy": trainer.accuracy(model, data.x_val, data.y_val),
        "test_accuracy": trainer.accuracy(model, data.x_test, data.y_test),
        "params": sum(p.numel() for p in model.parameters()),
        "flops": count_flops(model, data.x_val[:1]), "train_seconds": fit.seconds,
        "recipe": config.model_dump(exclude={"device", "eval_batch_size", "evaluate_test", "inherit_weights"}),
        "created_at": time.time(),
    }
