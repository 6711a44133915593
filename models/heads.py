"""Where each torchvision family keeps its classifier head: the one layer whose outputs are
the classes. Fine-tuning from pretrained weights replaces it when the classes differ, and
the size table counts the parameters a class adds from it. No torch import: a path is read
off any module tree."""
from __future__ import annotations

from typing import Any

# From the network to its head: attribute names, and indices into an nn.Sequential.
HEAD_PATHS: dict[str, tuple[str | int, ...]] = {
    "alexnet": ("classifier", -1),
    "convnext": ("classifier", -1),
    "densenet": ("classifier",),  # a single Linear, not a Sequential
    "efficientnet": ("classifier", -1),
    "googlenet": ("fc",),
    "inception": ("fc",),
    "maxvit": ("classifier", -1),
    "mnasnet": ("classifier", -1),
    "mobilenetv2": ("classifier", -1),
    "mobilenetv3": ("classifier", -1),
    "regnet": ("fc",),
    "resnet": ("fc",),  # resnet, resnext and wide_resnet
    "shufflenetv2": ("fc",),
    # A 1x1 convolution to the classes, then ReLU and average pooling: not the last layer.
    "squeezenet": ("classifier", 1),
    "swin_transformer": ("head",),
    "vgg": ("classifier", -1),
    "vision_transformer": ("heads", "head"),
}


def head_path_text(family: str) -> str:
    """The path as Python writes it from the network: `classifier[-1]`, `heads.head`."""
    text = ""
    for step in _path(family):
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def find_head(net: Any, family: str) -> tuple[Any, str | int, Any]:
    """(the head's parent module, its key there, the head): the parent's `key` attribute,
    or item for an index, is the layer to replace."""
    *way, last = _path(family)
    parent = net
    for step in way:
        parent = parent[step] if isinstance(step, int) else getattr(parent, step)
    head = parent[last] if isinstance(last, int) else getattr(parent, last)
    return parent, last, head


def replace_head(net: Any, family: str, layer: Any) -> None:
    """Put `layer` where the family's head is."""
    parent, key, _ = find_head(net, family)
    if isinstance(key, int):
        parent[key] = layer
    else:
        setattr(parent, key, layer)


def head_outputs(head: Any) -> int:
    """The classes a head gives: a Linear's out_features, a convolution's out_channels."""
    return int(getattr(head, "out_features", None) or head.out_channels)


def parameters_per_class(head: Any) -> int:
    """What one more class adds: one output's weights (a row of a Linear, one filter of a
    convolution) and its bias."""
    return int(head.weight[0].numel()) + (1 if getattr(head, "bias", None) is not None else 0)


def _path(family: str) -> tuple[str | int, ...]:
    try:
        return HEAD_PATHS[family]
    except KeyError:
        raise ValueError(f"no classifier head known for the family {family!r}; known: "
                         f"{', '.join(sorted(HEAD_PATHS))}") from None
