"""Model registry: build(name, input_shape, num_classes) for every trainable architecture."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Callable


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    builder: str  # "module:function", imported on first build so the catalog needs no torch


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo("lenet", "The PyTorch CIFAR-10 tutorial's Net: two conv layers, three linear.",
                  "models.lenet:build"),
        ModelInfo("cnn", "The Fashion-MNIST CNN: two conv blocks, one linear layer.",
                  "models.cnn:build"),
        ModelInfo("mlp", "Two-layer ReLU network on flattened pixels.", "models.mlp:build"),
        ModelInfo("resnet18", "torchvision ResNet-18 with a 3x3 stem for small images.",
                  "models.resnet:build"),
    )
}
MODEL_NAMES = tuple(sorted(MODELS))


def build(name: str, input_shape: tuple[int, int, int], num_classes: int):
    """A freshly initialised nn.Module for images of input_shape (C, H, W)."""
    try:
        info = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODEL_NAMES)}") from None
    module_name, func_name = info.builder.split(":")
    builder: Callable = getattr(import_module(module_name), func_name)
    return builder(tuple(input_shape), int(num_classes))


def set_mode(net, training: bool) -> None:
    """Train or eval mode, the one way the loop switches: a model that cannot take
    nn.Module.train() (a pair of exported programs, say) defines `set_mode(training)` of its
    own; reached through a DDP wrapper too (its `module`), which keeps its own flag."""
    model = getattr(net, "module", net)
    own = getattr(model, "set_mode", None)
    if own is None:
        net.train(training)
        return
    own(training)
    net.training = training
