"""The torchvision architectures trainhub trains by name, as the checked-in size table
(models/zoo_sizes.json, written by scripts/zoo_sizes.py and verified by
tests/unit/models/test_zoo_sizes.py) describes them: family, parameters, the input size each
needs and the pretrained weights torchvision publishes for it. No torch import: the API
lists, and checks jobs against, the table without building anything."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# A zoo model's `model` value: torchvision's builder name behind this prefix
# (torchvision.resnet50). Every zoo name has it, so none can be a built-in's name.
ZOO_PREFIX = "torchvision."
TABLE_FILE = Path(__file__).with_name("zoo_sizes.json")
# The class count the table's parameter counts are taken at.
TABLE_CLASSES = 10


@dataclass(frozen=True)
class ZooArchitecture:
    name: str  # torchvision's builder name: resnet50
    family: str  # torchvision's module: resnet, vision_transformer, ...
    head: str  # where its classifier head is (models.heads): fc, classifier[-1], ...
    parameters_at_10: int  # parameters with a 10-class head
    parameters_per_class: int  # what each class adds to its head
    min_size: int  # the smallest height and width it trains at (batch 2, train mode)
    fixed_size: tuple[int, int] | None  # the one (height, width) it takes, if only one
    batchnorm: bool  # has BatchNorm layers (a training batch of one image can fail)
    weights: tuple[str, ...]  # torchvision's pretrained weights: IMAGENET1K_V1, ...

    @property
    def model_name(self) -> str:
        return ZOO_PREFIX + self.name

    def parameters(self, num_classes: int) -> int:
        """Its parameter count with a head for num_classes classes."""
        return self.parameters_at_10 + (num_classes - TABLE_CLASSES) * self.parameters_per_class

    @property
    def input_text(self) -> str:
        if self.fixed_size is not None:
            return f"exactly {self.fixed_size[0]}x{self.fixed_size[1]}"
        return f"at least {self.min_size}x{self.min_size}"

    def size_problem(self, size: tuple[int, int]) -> str | None:
        """Why (height, width) cannot be this architecture's input, or None."""
        if self.fixed_size is not None and tuple(size) != self.fixed_size:
            return (f"{self.model_name} takes images of exactly {self.fixed_size[0]}x"
                    f"{self.fixed_size[1]}; allowed: {self.fixed_size[0]} or "
                    f"[{self.fixed_size[0]}, {self.fixed_size[1]}] (or leave it out)")
        if min(size) < self.min_size:
            return (f"{self.model_name} needs images of at least {self.min_size}x"
                    f"{self.min_size}; allowed: an integer or [height, width] of at least "
                    f"{self.min_size} (or leave it out: the dataset's size, raised to "
                    f"{self.min_size})")
        return None

    def image_size(self, dataset_size: tuple[int, int],
                   requested: tuple[int, int] | None = None) -> tuple[int, int]:
        """The (height, width) it trains at: the one asked for, else its fixed size, else
        the dataset's size with each side raised to its minimum."""
        if requested is not None:
            return (int(requested[0]), int(requested[1]))
        if self.fixed_size is not None:
            return self.fixed_size
        return (max(int(dataset_size[0]), self.min_size), max(int(dataset_size[1]), self.min_size))


def as_size(value: int | list[int] | tuple[int, int] | None) -> tuple[int, int] | None:
    """hyperparameters.image_size as (height, width): an int is a square."""
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def read_table(path: Path = TABLE_FILE) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def load_zoo(path: Path = TABLE_FILE) -> dict[str, ZooArchitecture]:
    """The table's architectures by model name (torchvision.<name>), in name order."""
    entries = read_table(path)["architectures"]
    zoo = {}
    for name in sorted(entries):
        e = entries[name]
        fixed = e.get("fixed_size")
        zoo[ZOO_PREFIX + name] = ZooArchitecture(
            name=name, family=e["family"], head=e["head"],
            parameters_at_10=int(e["parameters"]),
            parameters_per_class=int(e["parameters_per_class"]),
            min_size=int(e["min_size"]), fixed_size=tuple(fixed) if fixed else None,
            batchnorm=bool(e["batchnorm"]), weights=tuple(e["weights"]))
    return zoo
