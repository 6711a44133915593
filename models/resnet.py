"""torchvision's ResNet-18, adapted to small images (3x3 stem, no max-pool)."""
from __future__ import annotations

from torch import nn
from torchvision.models import resnet18


def build(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    channels = input_shape[0]
    model = resnet18(weights=None, num_classes=num_classes)
    # The ImageNet stem (7x7 stride 2 + max-pool) shrinks a 32x32 image to 8x8 before the
    # first block; the usual CIFAR adaptation keeps full resolution instead.
    model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
