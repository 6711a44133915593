"""The Fashion-MNIST CNN: two conv blocks and one linear layer."""
from __future__ import annotations

import torch
from torch import nn

from models.lenet import _flat_features


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, image_size: tuple[int, int] = (28, 28),
                 num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(_flat_features(self.features, in_channels, image_size),
                                    num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def build(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    channels, height, width = input_shape
    return SmallCNN(channels, (height, width), num_classes)
