"""The built-in torchvision datasets read torchvision's own files from the dataset root, and
the tensor cache serves them after the first read (files written here in MNIST's idx format)."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from worker.data import DatasetUnavailable, load_dataset


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    dtype_code = {np.uint8: 0x08}[array.dtype.type]
    header = struct.pack(">HBB", 0, dtype_code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_layout_is_read_then_cached(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    raw = tmp_path / "root" / folder / "raw"
    raw.mkdir(parents=True)
    train_x = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    train_y = (np.arange(60) % 10).astype(np.uint8)
    test_x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    test_y = (np.arange(20) % 10).astype(np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", train_x)
    write_idx(raw / "train-labels-idx1-ubyte", train_y)
    write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)

    cache = tmp_path / "cache"
    first = load_dataset(name, tmp_path / "root", cache, allow_download=False)
    assert first.shape == (1, 28, 28) and len(first.classes) == 10
    assert torch.equal(first.train.images[:, 0], torch.from_numpy(train_x))
    assert torch.equal(first.test.labels, torch.from_numpy(test_y.astype(np.int64)))
    assert (cache / f"{name}.pt").exists()

    # The raw files are gone: the tensor cache alone serves the second read.
    for f in raw.iterdir():
        f.unlink()
    second = load_dataset(name, tmp_path / "root", cache, allow_download=False)
    assert torch.equal(second.train.images, first.train.images)
    assert second.classes == first.classes and second.mean == first.mean


def test_missing_files_with_download_allowed_but_no_network(tmp_path, monkeypatch):
    """A failed download fails the job with the folder to fill by hand."""
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.mnist as tv_mnist

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    for name, folder in (("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")):
        with pytest.raises(DatasetUnavailable) as exc:
            load_dataset(name, tmp_path, tmp_path / "cache", allow_download=True)
        message = str(exc.value)
        assert "downloading failed" in message and str(tmp_path / folder) in message
