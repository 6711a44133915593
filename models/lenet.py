"""The CIFAR-10 tutorial's Net, padded (and, for tiny images, pooled less) to fit any size."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
    def __init__(self, in_channels: int = 3, image_size: tuple[int, int] = (32, 32),
                 num_classes: int = 10):
        super().__init__()
        height, width = image_size
        # The tutorial's 5x5 convs need 32x32 input; smaller images get padding instead
        # (LeNet-5 pads MNIST the same way) so the two pools still fit.
        pad1 = 2 if min(height, width) < 32 else 0
        after1 = (min(height, width) + 2 * pad1 - 4) // 2
        pad2 = 2 if after1 < 10 else 0
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=pad1)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=pad2)
        # A 4x4 map pooled to 2x2 loses too much of an 8x8 digit; keep it at 4x4.
        after2 = after1 + 2 * pad2 - 4
        self.pool2 = self.pool if after2 >= 8 else nn.Identity()
        flat = _flat_features(self._features, in_channels, image_size)
        self.fc1 = nn.Linear(flat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        return self.pool2(F.relu(self.conv2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self._features(x), 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def _flat_features(features, in_channels: int, image_size: tuple[int, int]) -> int:
    """Size of the flattened feature map, found by one dry forward pass."""
    with torch.no_grad():
        return features(torch.zeros(1, in_channels, *image_size)).numel()


def build(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    channels, height, width = input_shape
    return LeNet(channels, (height, width), num_classes)
