"""Built-in datasets read into uint8 tensors (through a tensor cache), and batching."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from core.builtin_datasets import BUILTIN_DATASETS, DatasetInfo
from core.epochs import validation_size
from core.image_decode import normalize
from core.tensor_datasets import (
    ImageDataset,
    Split,
    build_dataset,
    read_tensor_file,
    write_tensor_file,
)
from worker.feed import DeviceFeed

log = logging.getLogger(__name__)


class DatasetUnavailable(Exception):
    """The dataset's files are missing or unreadable; the message says where they go."""


def split_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Hold out a reproducible random `fraction` of train as a validation split."""
    if fraction <= 0:
        return train, None
    n_val = validation_size(len(train), fraction)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return (Split(train.images[train_idx], train.labels[train_idx]),
            Split(train.images[val_idx], train.labels[val_idx]))


# Images normalised at once when batches() starts a block: a few large tensor ops instead
# of five small ones per mini-batch (at batch 4 each op's dispatch costs more than its work).
BLOCK_BYTES = 16 << 20


def batches(split: Split, batch_size: int, mean: torch.Tensor, std: torch.Tensor,
            generator: torch.Generator | None = None, order: torch.Tensor | None = None,
            start_batch: int = 0,
            feed: DeviceFeed | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised float batches (the last may be short): in `order`, or shuffled by
    `generator`, or in stored order; from mini-batch `start_batch` on (a resumed epoch).
    They are gathered and normalised a block of whole batches (about BLOCK_BYTES of
    floats) at a time, and each batch is a view into its block.

    With a feed (worker.feed: the split is held in host memory, the job trains elsewhere)
    each block is gathered on the host and sent through it, then normalised on the device."""
    if order is None and generator is not None:
        order = torch.randperm(len(split), generator=generator)
    if order is not None:
        order = order.to(split.images.device)
    n = len(split) if order is None else len(order)  # a DDP rank's order is its share
    image_bytes = 4 * max(1, split.images[0].numel()) if n else 4
    block = max(1, BLOCK_BYTES // (image_bytes * batch_size)) * batch_size
    for block_start in range(start_batch * batch_size, n, block):
        if order is None:
            images = split.images[block_start:block_start + block]
            labels = split.labels[block_start:block_start + block]
        else:
            idx = order[block_start:block_start + block]
            images, labels = split.images[idx], split.labels[idx]
        if feed is not None:
            images, labels = feed.send(images, labels)
        inputs = normalize(images, mean, std)
        for start in range(0, len(labels), batch_size):
            yield inputs[start:start + batch_size], labels[start:start + batch_size]


def shard_order(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Process `rank`'s part of an epoch's order under DDP, as DistributedSampler makes it:
    the order padded (from its start) to a multiple of world_size, then every world_size-th
    index from `rank` on. Batched by batch_size // world_size, global batch i is then the
    single-process batch i (padded order) spread evenly over the ranks, so an epoch has the
    same number of steps as a single-process one (batch_size is a multiple of world_size)
    and no rank ever gets an empty batch."""
    pad = -len(order) % world_size
    if pad:
        order = torch.cat([order, order.repeat(pad // len(order) + 1)[:pad]])
    return order[rank::world_size]


def complete_last_batch(order: torch.Tensor, batch_size: int, min_images: int,
                        world_size: int = 1) -> torch.Tensor:
    """An epoch's order whose last mini-batch holds at least min_images images on every
    rank: a shorter one gets the first images of the order again (BatchNorm refuses a
    training batch of one image wherever a map is 1x1). The epoch keeps its number of
    steps (core.epochs counts them); min_images 1 (every built-in model) changes nothing,
    nor does a batch that is never larger (batch_size // world_size below min_images)."""
    if min_images <= 1 or batch_size // world_size < min_images or not len(order):
        return order
    last = len(order) % batch_size
    need = world_size * (min_images - 1) + 1  # ceil(need / world_size) == min_images
    if last == 0 or last >= need:
        return order
    extra = need - last
    return torch.cat([order, order.repeat(-(-extra // len(order)))[:extra]])


# ---- loading -----------------------------------------------------------------------------

def read_dataset(source: dict, settings, store) -> ImageDataset:
    """A job's dataset from where the runner found it (every rank of a DDP job reads it):
    {"builtin": name}, or {"upload": id, "key": its tensor file in the artifact store}."""
    if "key" in source:
        with store.open(source["key"]) as f:
            return read_tensor_file(source["upload"], f)
    return load_dataset(source["builtin"], settings.resolved_dataset_root, settings.cache_dir,
                        settings.allow_download)


def load_dataset(name: str, dataset_root: Path, cache_dir: Path,
                 allow_download: bool) -> ImageDataset:
    """A built-in dataset, from the tensor cache when it was read before."""
    info = BUILTIN_DATASETS.get(name)
    if info is None:
        raise DatasetUnavailable(f"unknown dataset {name!r}")
    if name == "fake":  # generated from a fixed seed: cheaper to make than to cache
        return build_dataset(name, list(info.classes), *_load_fake(info))
    cache_file = cache_dir / f"{name}.pt"
    if cache_file.exists():
        try:
            return read_tensor_file(name, cache_file)
        except Exception as exc:  # a torn or foreign file: rebuild it
            log.warning("ignoring unreadable tensor cache %s: %s", cache_file, exc)
    if name == "digits":
        train, test = _load_digits()
        classes = list(info.classes)
    else:
        train, test, classes = _load_torchvision(info, dataset_root, allow_download)
    dataset = build_dataset(name, classes, train, test)
    write_tensor_file(dataset, cache_file)
    return dataset


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The documented digits split (docs/concepts.md); pixels 0-16, as scikit-learn ships them."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    return train_test_split(digits.images, digits.target, test_size=0.2,
                            stratify=digits.target, random_state=0)


def _load_digits() -> tuple[Split, Split]:
    x_train, x_test, y_train, y_test = digits_split()

    def to_split(x: np.ndarray, y: np.ndarray) -> Split:
        # Scale 0-16 to 0-255 as a PNG of the digit would hold it.
        pixels = np.rint(x * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
        return Split(torch.from_numpy(pixels), torch.from_numpy(y.astype(np.int64)))

    return to_split(x_train, y_train), to_split(x_test, y_test)


def _load_fake(info: DatasetInfo) -> tuple[Split, Split]:
    from torchvision.datasets import FakeData
    from torchvision.transforms.functional import pil_to_tensor

    def make(size: int, offset: int) -> Split:
        data = FakeData(size=size, image_size=info.shape, num_classes=len(info.classes),
                        random_offset=offset)
        images, labels = zip(*(data[i] for i in range(size)))
        return Split(torch.stack([pil_to_tensor(im) for im in images]),
                     torch.tensor(labels, dtype=torch.int64))

    return make(info.train_size, 0), make(info.test_size, info.train_size)


def _load_torchvision(info: DatasetInfo, root: Path,
                      allow_download: bool) -> tuple[Split, Split, list[str]]:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST,
           "cifar10": datasets.CIFAR10}[info.name]
    where = root / (info.folder or "")
    by_hand = (f"put the files {', '.join(info.files)} in {where}/ "
               f"(torchvision's {cls.__name__} layout under TRAINHUB_DATASET_ROOT={root})")
    try:
        root.mkdir(parents=True, exist_ok=True)
        train = cls(str(root), train=True, download=allow_download)
        test = cls(str(root), train=False, download=allow_download)
    except Exception as exc:
        if allow_download:
            raise DatasetUnavailable(
                f"{info.name}: downloading failed ({type(exc).__name__}: {exc}); {by_hand}"
            ) from None
        raise DatasetUnavailable(
            f"{info.name} files not found and downloads are disabled "
            f"(TRAINHUB_ALLOW_DOWNLOAD=false): {by_hand}") from None

    def to_split(ds) -> Split:
        data = torch.as_tensor(np.asarray(ds.data))
        images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
        return Split(images.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64))

    return to_split(train), to_split(test), list(train.classes)
