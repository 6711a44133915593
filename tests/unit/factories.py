"""Small builders shared by the tests: synthetic datasets, archives and uploads, thread settings."""
from __future__ import annotations

import io
import tarfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from core.tensor_datasets import ImageDataset, Split, channel_stats


def synthetic_dataset(n_train: int, n_test: int, shape=(1, 4, 4), num_classes: int = 3,
                      seed: int = 0, class_prefix: str = "c") -> ImageDataset:
    """Random uint8 images and labels, reproducible for a seed."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        return Split(torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
                     torch.randint(0, num_classes, (n,), dtype=torch.int64, generator=g))

    train, test = split(n_train), split(n_test)
    mean, std = channel_stats(train.images)
    return ImageDataset("synthetic", [f"{class_prefix}{i}" for i in range(num_classes)],
                        train, test, mean, std)


@contextmanager
def one_torch_thread():
    """Tiny models: intra-op threads only add overhead (and stall on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_zip(path: Path, files: dict[str, bytes], compression: int) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def write_tar(path: Path, files: dict[str, bytes], mode: str) -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def npz_bytes(n_train: int = 20, n_test: int = 6, image_shape=(8, 8), num_classes: int = 2,
              seed: int = 0) -> bytes:
    """An .npz upload: random uint8 images, labels cycling through the classes."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=rng.integers(0, 256, (n_train, *image_shape), dtype=np.uint8),
             y_train=np.arange(n_train) % num_classes,
             x_test=rng.integers(0, 256, (n_test, *image_shape), dtype=np.uint8),
             y_test=np.arange(n_test) % num_classes)
    return buffer.getvalue()
