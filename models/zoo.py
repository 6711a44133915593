"""torchvision's classification architectures as trainhub models: torchvision's own network
(get_model(name, weights=None, num_classes=K), auxiliary heads off) behind an input adapter
that, on the batch's device, resizes images to the job's image size (bilinear, after the
normalisation) and repeats a grayscale channel to the three the network takes. The image
size travels in the model's state_dict (its extra state), so a checkpoint carries it to
/predict and to an export."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from models.heads import find_head
from models.zoo_table import ZooArchitecture

# Builders that make auxiliary classifiers unless told not to; their weights are drawn by
# torchvision's current initialisation (init_weights=True: no FutureWarning).
AUX_OFF = {"googlenet": {"aux_logits": False, "init_weights": True},
           "inception_v3": {"aux_logits": False, "init_weights": True}}
NETWORK_CHANNELS = 3


def build_network(name: str, num_classes: int) -> nn.Module:
    """torchvision's architecture `name`, randomly initialised, with a num_classes head."""
    from torchvision.models import get_model

    return get_model(name, weights=None, num_classes=num_classes, **AUX_OFF.get(name, {}))


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def has_batchnorm(net: nn.Module) -> bool:
    return any(is_batchnorm(m) for m in net.modules())


class ZooNet(nn.Module):
    """A torchvision network (`net`) fed images of `image_size` with three channels."""

    def __init__(self, net: nn.Module, architecture: ZooArchitecture, in_channels: int,
                 image_size: tuple[int, int]):
        super().__init__()
        if in_channels not in (1, NETWORK_CHANNELS):
            raise ValueError(f"{architecture.model_name} takes 1-channel (grayscale) or "
                             f"3-channel images; the dataset has {in_channels} channels")
        self.net = net
        self.architecture = architecture
        self.in_channels = in_channels
        self.image_size = (int(image_size[0]), int(image_size[1]))
        # A training batch of one image fails in BatchNorm wherever a map is 1x1: the loop
        # gives such a model's last batch a second image (worker.loop).
        self.min_train_batch = 2 if has_batchnorm(net) else 1
        self.frozen_backbone = False  # hyperparameters.freeze "backbone": see freeze_backbone

    def head(self) -> nn.Module:
        """The classifier head: the layer whose outputs are the classes (models.heads)."""
        return find_head(self.net, self.architecture.family)[2]

    def freeze_backbone(self) -> None:
        """Train the head alone: every other parameter stops taking gradients (and an
        optimizer made of the trainable parameters never sees them), and the BatchNorm
        layers stay in eval mode while training (set_mode), their running statistics as
        they were."""
        trainable = {id(p) for p in self.head().parameters()}
        for parameter in self.parameters():
            parameter.requires_grad_(id(parameter) in trainable)
        self.frozen_backbone = True

    def set_mode(self, training: bool) -> None:
        """models.set_mode's switch: train or eval mode, but a frozen backbone's BatchNorm
        layers stay in eval mode (the head has none)."""
        self.train(training)
        if training and self.frozen_backbone:
            for module in self.net.modules():
                if is_batchnorm(module):
                    module.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False,
                              antialias=False)
        if x.shape[1] != NETWORK_CHANNELS:  # grayscale: the same plane in every channel
            x = x.expand(-1, NETWORK_CHANNELS, -1, -1)
        out = self.net(x)
        # googlenet/inception give (logits, aux...) where auxiliary heads are on.
        return out[0] if isinstance(out, tuple) else out

    def use_image_size(self, dataset_size: tuple[int, int],
                       requested: tuple[int, int] | None) -> tuple[int, int]:
        """Train (and predict) at `requested`, or the architecture's default for images of
        dataset_size; ValueError when the architecture cannot take it."""
        size = self.architecture.image_size(dataset_size, requested)
        problem = self.architecture.size_problem(size)
        if problem:
            raise ValueError(f"image_size {size[0]}x{size[1]}: {problem}")
        self.image_size = size
        return size

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # A checkpoint keeps the tensors alone, not the modules' versions (`_metadata`) that
        # MNASNet needs to load (it refuses none): a state without them is this network's.
        if getattr(state_dict, "_metadata", None) is None:
            state_dict = OrderedDict(state_dict)
            state_dict._metadata = self.state_dict()._metadata
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def get_extra_state(self) -> torch.Tensor:
        # A tensor: the checkpoint format holds tensors and plain types (weights_only).
        return torch.tensor(self.image_size, dtype=torch.int64)

    def set_extra_state(self, state) -> None:
        height, width = (int(v) for v in torch.as_tensor(state).tolist())
        self.image_size = (height, width)


def build(architecture: ZooArchitecture, input_shape: tuple[int, int, int],
          num_classes: int) -> ZooNet:
    """The model for images of input_shape (C, H, W): at the architecture's default image
    size for them until ZooNet.use_image_size says otherwise."""
    channels, height, width = input_shape
    net = build_network(architecture.name, num_classes)
    return ZooNet(net, architecture, channels, architecture.image_size((height, width)))
