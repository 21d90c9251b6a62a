"""A network function of a user's (``genome_options.network = "networks:tiny"``), for tests/test_hparams.py."""

from __future__ import annotations

from torch import nn


def tiny(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, num_classes))


def not_a_module(input_shape, num_classes):
    return "a string"
