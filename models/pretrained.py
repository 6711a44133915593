"""Starting a torchvision model from torchvision's published weights (a job's `pretrained`).

The file is the one torch hub keeps: <torch.hub.get_dir()>/checkpoints/<the URL's file name>
(TORCH_HOME moves it), downloaded there when it is missing and a network answers. torch hub
checks the sha256 prefix in a file's name only while downloading, and loads a cached file
with weights_only=False: here every load checks the prefix first and reads the file with
weights_only=True. The weights go into the network with the head they were published with
(ImageNet's 1000 classes); that head is then replaced by the job's fresh one unless the
dataset's classes are the weights' own. Training normalises with the weights' mean and std."""
from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
from torch import nn

import models
from models.heads import find_head, replace_head

log = logging.getLogger(__name__)

DEFAULT = "DEFAULT"  # torchvision's recommended weights of an architecture
# torch.hub's own pattern for the sha256 prefix in a file name: the hex digits after a '-'.
HASH_REGEX = torch.hub.HASH_REGEX
# googlenet and inception_v3 were trained on images scaled to [-1, 1]: torchvision builds
# them with transform_input=True, which turns ImageNet-normalised inputs into that inside
# the network. Normalising to it directly is the same arithmetic, and keeps the network
# trainhub builds (and /predict and the export rebuild) as it is.
OWN_NORMALIZATION = {"googlenet": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                     "inception_v3": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}
# The auxiliary classifiers the published files carry; trainhub builds these without them.
AUX_PREFIXES = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}
# DenseNet's published files name a layer's parts `norm.1` where the network has `norm1`.
DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                              r"((?:[12])\.(?:weight|bias|running_mean|running_var))$")

Download = Callable[[str, str], None]


class PretrainedError(Exception):
    """The weights cannot be used; the message is one line for the job's error."""


@dataclass(frozen=True)
class Weights:
    """One set of published weights: where its file comes from and what it was trained on."""

    name: str  # torchvision's: ResNet50_Weights.IMAGENET1K_V2
    url: str
    mean: tuple[float, ...]  # the normalisation it was trained with (per RGB channel)
    std: tuple[float, ...]
    # The classes its head gives, in order; None for feature-extraction weights (vgg16's
    # IMAGENET1K_FEATURES), whose classifier holds no trained values.
    categories: tuple[str, ...] | None

    @property
    def file_name(self) -> str:
        return Path(urlparse(self.url).path).name


def torchvision_weights(architecture: str, weights_name: str) -> Weights:
    """torchvision's weights `weights_name` (or DEFAULT) of the builder `architecture`."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(architecture)
    weights = enum.DEFAULT if weights_name == DEFAULT else enum[weights_name]
    transforms = weights.transforms()
    mean, std = OWN_NORMALIZATION.get(architecture, (transforms.mean, transforms.std))
    categories = weights.meta.get("categories")
    return Weights(f"{type(weights).__name__}.{weights.name}", weights.url,
                   tuple(float(v) for v in mean), tuple(float(v) for v in std),
                   tuple(categories) if categories else None)


def job_weights(spec: dict) -> Weights | None:
    """The weights a job's spec starts from (its `pretrained`), or None."""
    if not spec.get("pretrained"):
        return None
    return torchvision_weights(models.model_info(spec["model"]).zoo.name, spec["pretrained"])


def job_normalization(spec: dict, channels: int) -> tuple[list[float], list[float]] | None:
    """The (mean, std) a job's images are normalised with when it starts from pretrained
    weights (the weights' own), or None: the dataset's own."""
    weights = job_weights(spec)
    return normalization(weights, channels) if weights is not None else None


def normalization(weights: Weights, channels: int) -> tuple[list[float], list[float]]:
    """The (mean, std) per channel that images of `channels` channels are normalised with:
    the weights' own; a grayscale image (repeated to three channels by the model) takes
    their averages over the channels."""
    if channels == len(weights.mean):
        return list(weights.mean), list(weights.std)
    return ([sum(weights.mean) / len(weights.mean)] * channels,
            [sum(weights.std) / len(weights.std)] * channels)


def cache_folder() -> Path:
    """Where torch hub keeps downloaded weights (under TORCH_HOME when it is set)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch(weights: Weights, folder: Path, download: Download | None = None) -> Path:
    """The weights' file in `folder`, downloaded into it first when missing (`download`:
    torch.hub.download_url_to_file), its hash checked (a cached file's too)."""
    path = folder / weights.file_name
    if not path.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (download or _download)(weights.url, str(path))
        except Exception as exc:  # noqa: BLE001 - offline, refused, a full disk: one line
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            raise PretrainedError(
                f"the weights file {weights.file_name} is not in {folder} and could not be "
                f"downloaded from {weights.url} ({reason}); put that file in that folder "
                "(docs/operations.md#pretrained-weights-offline)") from None
    check_hash(path)
    return path


def _download(url: str, path: str) -> None:
    # With the name's prefix torch hub checks the bytes before moving them into place: a
    # bad download leaves nothing in the cache.
    match = HASH_REGEX.search(Path(path).name)
    torch.hub.download_url_to_file(url, path, hash_prefix=match.group(1) if match else None,
                                   progress=False)


def check_hash(path: Path) -> None:
    """PretrainedError unless the file's sha256 starts with the hex digits in its name."""
    match = HASH_REGEX.search(path.name)
    if match is None or not match.group(1):
        raise PretrainedError(f"the weights file {path} has no sha256 prefix in its name "
                              "(name-<hex digits>.pth) to check it against")
    prefix, digest = match.group(1), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(prefix):
        raise PretrainedError(
            f"the weights file {path} does not match its name's hash: its sha256 starts "
            f"{digest.hexdigest()[:len(prefix)]}, its name says {prefix}; delete it and "
            "put the published file there")


def read_state(path: Path) -> OrderedDict:
    """The file's state dict, read without running code (weights_only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refused, a truncated file ...
        message = " ".join(str(exc).split())[:200]
        raise PretrainedError(f"the weights file {path} is not a readable state dict "
                              f"({type(exc).__name__}: {message})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise PretrainedError(f"the weights file {path} holds no state dict of tensors")
    return state


def load_pretrained(model, weights: Weights, classes: list[str], folder: Path | None = None,
                    download: Download | None = None) -> str:
    """Load the weights' file (from `folder`, default the torch hub cache) into a zoo model
    (models.zoo.ZooNet) built for `classes`; what was done, for the job's log."""
    path = fetch(weights, folder if folder is not None else cache_folder(), download)
    kept = load_state(model, read_state(path), weights.categories, classes)
    return (f"started from {weights.name} ({path}); "
            + ("its head and classes kept" if kept else
               f"its head replaced by a new one for the dataset's {len(classes)} classes"))


def load_state(model, state: dict, categories: tuple[str, ...] | None,
               classes: list[str]) -> bool:
    """Load a published state dict into model.net with the head it was published with, then
    put the model's own (fresh) head back unless `classes` are the weights' `categories`.
    Whether the published head was kept."""
    arch, net = model.architecture, model.net
    state = _as_network_names(arch.name, arch.family, state, net, categories is None)
    _, _, fresh = find_head(net, arch.family)
    key = {id(m): name for name, m in net.named_modules()}[id(fresh)] + ".weight"
    if key not in state:
        raise PretrainedError(f"the weights are not {arch.model_name}'s: they have no {key}")
    published = head_like(fresh, int(state[key].shape[0]))
    replace_head(net, arch.family, published)
    layout = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        replace_head(net, arch.family, fresh)
        first = " ".join(str(exc).split())[:300]
        raise PretrainedError(f"the weights do not fit {arch.model_name}: {first}") from None
    if {k: tuple(v.shape) for k, v in net.state_dict().items()} != layout:
        # MNASNet's modules rebuild themselves as torchvision's first version had them.
        raise PretrainedError(
            f"the weights change {arch.model_name}'s layers as they load (an older "
            "torchvision's layout), which a checkpoint cannot rebuild: choose other weights")
    keep = categories is not None and list(categories) == list(classes)
    if not keep:
        replace_head(net, arch.family, fresh)
    return keep


def head_like(head: nn.Module, outputs: int) -> nn.Module:
    """A layer of the head's kind and inputs giving `outputs` classes, uninitialised (no
    random numbers drawn): the loaded weights fill it."""
    bias = getattr(head, "bias", None) is not None
    device = head.weight.device
    if isinstance(head, nn.Conv2d):
        return nn.utils.skip_init(nn.Conv2d, head.in_channels, outputs, head.kernel_size,
                                  stride=head.stride, padding=head.padding, bias=bias,
                                  device=device)
    return nn.utils.skip_init(nn.Linear, head.in_features, outputs, bias=bias, device=device)


def _as_network_names(name: str, family: str, state: dict, net: nn.Module,
                      features_only: bool) -> OrderedDict:
    """The published state as trainhub's network names and sizes it: DenseNet's old key
    names renamed, auxiliary classifiers left out, a ViT's position embedding interpolated
    to the network's image size, and, for feature-extraction weights, the untrained
    (non-finite) tensors replaced by the network's own. The modules' versions (`_metadata`)
    are kept."""
    metadata = getattr(state, "_metadata", None)
    own = net.state_dict()
    aux = AUX_PREFIXES.get(name, ())
    out = OrderedDict()
    for key, value in state.items():
        if aux and key.startswith(aux):
            continue
        if family == "densenet":
            match = DENSENET_OLD_KEY.match(key)
            key = match.group(1) + match.group(2) if match else key
        out[key] = value
    if family == "vision_transformer":
        out = _fit_position_embedding(out, net)
    # (The head itself, of another size, is replaced after the load anyway.)
    untrained = [k for k, v in out.items() if features_only and k in own
                 and own[k].shape == v.shape and v.is_floating_point()
                 and not torch.isfinite(v).all()]
    for key in untrained:
        out[key] = own[key]
    if untrained:
        log.info("the weights leave %s untrained: those keep a fresh initialisation",
                 ", ".join(untrained))
    if metadata is not None:
        out._metadata = metadata
    return out


def _fit_position_embedding(state: OrderedDict, net: nn.Module) -> OrderedDict:
    """A ViT's weights published for another image size (SWAG's 384, 512, 518) at the
    network's: torchvision's own bicubic interpolation of the position embedding."""
    from torchvision.models.vision_transformer import interpolate_embeddings

    key = "encoder.pos_embedding"
    if key not in state or state[key].shape == net.encoder.pos_embedding.shape:
        return state
    side = math.isqrt(state[key].shape[1] - 1) * net.patch_size
    log.info("the weights are for %dx%d images: their position embedding is interpolated "
             "to %dx%d", side, side, net.image_size, net.image_size)
    return interpolate_embeddings(net.image_size, net.patch_size, state)
