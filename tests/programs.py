"""torch.export programs for the tests: a small network torchvision does not have (conv,
BatchNorm, Dropout, a residual block with stochastic depth), exported in train and eval mode with a dynamic batch,
and the tools that turn a saved archive into a hostile one (an edited graph or weights
config, a replaced or added entry, a pickle that would leave a marker file if anything
unpickled it)."""
from __future__ import annotations

import builtins
import io
import json
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.export import Dim
from torchvision.ops import StochasticDepth

SHAPE = (3, 12, 12)  # (C, H, W)
CLASSES = 5


class ResidualBlock(nn.Module):
    """conv, BatchNorm and stochastic depth (its `bernoulli_` is in the train graph only)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.depth = StochasticDepth(0.2, "row")

    def forward(self, x):
        return torch.relu(x + self.depth(self.bn(self.conv(x))))


class ResidualNet(nn.Module):
    def __init__(self, channels: int = 8, classes: int = CLASSES, dropout: float = 0.25):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(SHAPE[0], channels, 3, padding=1),
                                  nn.BatchNorm2d(channels), nn.ReLU())
        self.block = ResidualBlock(channels)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        x = self.block(self.stem(x))
        return self.head(self.drop(x.mean(dim=(2, 3))))


class PlainNet(nn.Module):
    """No mode-dependent op: one program serves both modes."""

    def __init__(self, classes: int = CLASSES):
        super().__init__()
        self.conv = nn.Conv2d(SHAPE[0], 4, 3)
        self.head = nn.Linear(4, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).amax(dim=(2, 3)))


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def export(net: nn.Module, training: bool, dynamic: bool = True,
           example: torch.Tensor | None = None) -> torch.export.ExportedProgram:
    net.train(training)
    shapes = ({0: Dim("batch")},) if dynamic else None
    return torch.export.export(net, (images() if example is None else example,),
                               dynamic_shapes=shapes)


def save(program: torch.export.ExportedProgram, path: Path) -> Path:
    torch.export.save(program, path)
    return path


def residual_net(seed: int = 0) -> ResidualNet:
    torch.manual_seed(seed)
    return ResidualNet()


@lru_cache(maxsize=None)
def _residual_archives() -> tuple[bytes, bytes]:
    net = residual_net()
    out = []
    for training in (True, False):
        buffer = io.BytesIO()
        torch.export.save(export(net, training), buffer)
        out.append(buffer.getvalue())
    return out[0], out[1]


def residual_pair(folder: Path) -> tuple[Path, Path]:
    """ResidualNet (seed 0) saved in train mode (train.pt2) and eval mode (eval.pt2)."""
    train, eval_ = _residual_archives()
    (folder / "train.pt2").write_bytes(train)
    (folder / "eval.pt2").write_bytes(eval_)
    return folder / "train.pt2", folder / "eval.pt2"


def rewrite(source: Path, target: Path, *, graph: Callable[[dict], None] | None = None,
            weights: Callable[[dict], None] | None = None,
            replace: dict[str, bytes] | None = None,
            add: dict[str, bytes] | None = None) -> Path:
    """A copy of an archive with its graph or weights config edited in place by the given
    functions, entries (named below the top folder) replaced or added."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            name = info.filename.split("/", 1)[1]
            data = replace.get(name, zin.read(info))
            edit = {"models/model.json": graph,
                    "data/weights/model_weights_config.json": weights}.get(name)
            if edit is not None:
                document = json.loads(data)
                edit(document)
                data = json.dumps(document).encode()
            zout.writestr(info, data)
        for name, data in add.items():
            zout.writestr(f"{root}/{name}", data)
    return target


class LeavesMarker:
    """Unpickled, it opens (creates) the marker file: proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


def marker_pickle(marker: Path) -> bytes:
    """A torch.save file whose loading with weights_only=False creates `marker`."""
    buffer = io.BytesIO()
    torch.save((LeavesMarker(marker),), buffer)
    return buffer.getvalue()


def nodes(document: dict) -> list[dict]:
    return document["graph_module"]["graph"]["nodes"]
