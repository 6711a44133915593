"""Two-layer ReLU network on flattened pixels."""
from __future__ import annotations

from torch import nn


def build(input_shape: tuple[int, int, int], num_classes: int, hidden: int = 256) -> nn.Module:
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * height * width, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
