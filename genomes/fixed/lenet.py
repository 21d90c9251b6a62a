"""LeNet-5 (LeCun et al. 1998) with batch norm: the fixed network a ``genome = "fixed"`` run names by
default, and the reference every search claim is measured against (``evolve.training.lenet``)."""

from __future__ import annotations

import torch
from torch import nn

MIN_SIDE = 12  # the smallest side both 5x5 convolutions and poolings fit


class LeNet5(nn.Module):
    """LeCun et al. 1998's layout with batch norm and ReLU, for any input size (padded first conv)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: tuple[int, int] = (6, 16)) -> None:
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width[0], 5, padding=2, bias=False), nn.BatchNorm2d(width[0]), nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width[0], width[1], 5, bias=False), nn.BatchNorm2d(width[1]), nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, max(h, MIN_SIDE), max(w, MIN_SIDE))).numel()
        self.pad = (0, max(0, MIN_SIDE - w), 0, max(0, MIN_SIDE - h))  # tiny inputs (8x8 digits) grow to fit
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84),
                                        nn.ReLU(), nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = nn.functional.pad(x, self.pad)
        return self.classifier(self.features(x))
