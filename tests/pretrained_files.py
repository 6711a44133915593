"""Published weights as the tests make them, without a network: a torchvision network's
1000-class state saved under the name torchvision gives its files (<name>-<the first hex
digits of its sha256>.pth), and a weights entry of the test's own pointing at it."""
from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from pathlib import Path

import torch
from torchvision.models import get_model

from models.pretrained import Weights
from models.zoo import AUX_OFF

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CATEGORIES = tuple(f"imagenet{i}" for i in range(1000))


def published_state(name: str, seed: int = 1, calibrate: bool = False) -> OrderedDict:
    """What torchvision publishes for `name`: its 1000-class network's state (auxiliary
    heads on, as its builder loads them). `calibrate`: BatchNorm's running statistics taken
    over a few random 32x32 batches, as training leaves them (a fresh network's mean 0 and
    variance 1 shrink a deep network's features to about 1e-6 in eval mode)."""
    torch.manual_seed(seed)
    extra = {"aux_logits": True, "init_weights": False} if name in AUX_OFF else {}
    net = get_model(name, weights=None, num_classes=1000, **extra)
    if calibrate:
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = None  # a plain average over the batches
        net.train()
        with torch.no_grad():
            for _ in range(4):
                net(torch.randn(16, 3, 32, 32))
    return net.state_dict()


def write_weights(folder: Path, state, stem: str, prefix: str | None = None) -> Path:
    """state saved as <stem>-<its sha256's first 8 hex digits (or `prefix`)>.pth."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-{prefix or hashlib.sha256(data).hexdigest()[:8]}.pth"
    path.write_bytes(data)
    return path


def weights_entry(file_name: str, categories=CATEGORIES,
                  url: str = "https://weights.invalid/models/") -> Weights:
    """A weights entry of the test's own: ImageNet's normalisation, its URL ending in the
    file's name."""
    return Weights("TestNet_Weights.IMAGENET1K_V1", url + Path(file_name).name,
                   IMAGENET[0], IMAGENET[1], categories)
