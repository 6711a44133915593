"""Model registry: build(name, input_shape, num_classes) for every trainable architecture:
trainhub's four built-ins, and torchvision's classification zoo as `torchvision.<name>`
(models.zoo_table; the catalog needs no torch)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import import_module
from typing import Callable

from models.zoo_table import ZOO_PREFIX, ZooArchitecture, as_size, load_zoo


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    builder: str  # "module:function", imported on first build so the catalog needs no torch
    # A torchvision architecture (built by models.zoo); None for a built-in.
    zoo: ZooArchitecture | None = None


BUILTIN_MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo("lenet", "The PyTorch CIFAR-10 tutorial's Net: two conv layers, three linear.",
                  "models.lenet:build"),
        ModelInfo("cnn", "The Fashion-MNIST CNN: two conv blocks, one linear layer.",
                  "models.cnn:build"),
        ModelInfo("mlp", "Two-layer ReLU network on flattened pixels.", "models.mlp:build"),
        ModelInfo("resnet18", "torchvision ResNet-18 with a 3x3 stem for small images "
                  f"(torchvision's own, with its ImageNet stem, is {ZOO_PREFIX}resnet18).",
                  "models.resnet:build"),
    )
}
ZOO_MODELS: dict[str, ModelInfo] = {
    name: ModelInfo(name, f"torchvision's {arch.name} ({arch.family} family), "
                          "randomly initialised.", "models.zoo:build", arch)
    for name, arch in load_zoo().items()
}
MODELS: dict[str, ModelInfo] = {**BUILTIN_MODELS, **ZOO_MODELS}
BUILTIN_MODEL_NAMES = tuple(sorted(BUILTIN_MODELS))
MODEL_NAMES = BUILTIN_MODEL_NAMES + tuple(sorted(ZOO_MODELS))


def unknown_model_message(name: str, shown: str | None = None) -> str:
    """Why `name` (written as `shown`: a client's value cut to size) is no model value,
    with the closest names and what is allowed."""
    bare = {n[len(ZOO_PREFIX):]: n for n in ZOO_MODELS}
    close = [name] if name in bare else difflib.get_close_matches(
        name[:100], [*MODEL_NAMES, *bare], n=3, cutoff=0.75)
    close = list(dict.fromkeys(c if c in MODELS else bare[c] for c in close))
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    return (f"unknown model {shown or repr(name)}{hint}; allowed: "
            f"{', '.join(BUILTIN_MODEL_NAMES)}, or {ZOO_PREFIX}<name> for torchvision's "
            f"{len(ZOO_MODELS)} architectures (GET /models lists them all)")


def model_info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(unknown_model_message(name)) from None


def build(name: str, input_shape: tuple[int, int, int], num_classes: int):
    """A freshly initialised nn.Module for images of input_shape (C, H, W)."""
    info = model_info(name)
    module_name, func_name = info.builder.split(":")
    builder: Callable = getattr(import_module(module_name), func_name)
    if info.zoo is not None:
        return builder(info.zoo, tuple(input_shape), int(num_classes))
    return builder(tuple(input_shape), int(num_classes))


def set_image_size(model, input_shape, image_size) -> tuple[int, int] | None:
    """Make a zoo model take its images at `image_size` (hyperparameters.image_size: an int,
    [height, width], or None for the default: the dataset's size raised to the minimum);
    the (height, width) it will resize to. Built-ins take the dataset's size as it is: None."""
    own = getattr(model, "use_image_size", None)
    if own is None:
        return None
    return own(tuple(input_shape)[-2:], as_size(image_size))


def min_train_batch(model) -> int:
    """The fewest images a training batch of this model may hold (2 for a zoo model with
    BatchNorm: one image fails wherever a map is 1x1)."""
    return int(getattr(model, "min_train_batch", 1))


def freeze_backbone(model) -> None:
    """hyperparameters.freeze "backbone": a zoo model trains its classifier head alone
    (models.zoo.ZooNet.freeze_backbone); ValueError for a built-in, which has none apart."""
    own = getattr(model, "freeze_backbone", None)
    if own is None:
        raise ValueError("freeze 'backbone' applies to torchvision models only")
    own()


def set_mode(net, training: bool) -> None:
    """Train or eval mode, the one way the loop switches: a model that cannot take
    nn.Module.train() as it is (a pair of exported programs, say, or a zoo model with a
    frozen backbone, whose BatchNorm layers stay in eval mode) defines `set_mode(training)`
    of its own; reached through a DDP wrapper too (its `module`), which keeps its own flag."""
    model = getattr(net, "module", net)
    own = getattr(model, "set_mode", None)
    if own is None:
        net.train(training)
        return
    own(training)
    net.training = training
