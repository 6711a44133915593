"""Datasets as uint8 tensors: splits, per-channel statistics, the tensor file format."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from core.files import atomic_write


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> "Split":
        """On `device`, images in plain (N, C, H, W) order: tensor files written before
        uploads stored them so hold (N, H, W, C) strides, and batches gathered from those
        train LeNet at half speed on a CPU (channels-last convolutions on native kernels)."""
        return Split(self.images.to(device).contiguous(), self.labels.to(device))


@dataclass
class ImageDataset:
    name: str
    classes: list[str]
    train: Split
    test: Split
    mean: list[float]  # per channel, of train images scaled to [0, 1]
    std: list[float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def normalized_with(self, stats: tuple[list[float], list[float]] | None) -> "ImageDataset":
        """The same images normalised with stats (mean, std per channel) instead of their
        own: pretrained weights' (models.pretrained.normalization); itself for None."""
        if stats is None:
            return self
        return replace(self, mean=list(stats[0]), std=list(stats[1]))


def channel_stats(images: torch.Tensor, chunk_bytes: int = 4 * 2**20
                  ) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std of uint8 images scaled to [0, 1].

    From each channel's histogram of byte values, counted a slice of images at a time: a
    float64 copy of the whole set takes 8 times its memory, and more for the transposed copy
    and the deviations (a 1 GB upload took the process to 9 GB). The sums are exact."""
    channels = images.shape[1]
    histograms = torch.zeros(channels, 256, dtype=torch.int64, device=images.device)
    rows = max(1, chunk_bytes // max(1, images.shape[1:].numel()))
    for start in range(0, images.shape[0], rows):
        part = images[start:start + rows]
        for c in range(channels):
            histograms[c] += torch.bincount(part[:, c].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.int64, device=images.device)
    means, stds = [], []
    for histogram in histograms:
        count = int(histogram.sum())
        s1, s2 = int((histogram * values).sum()), int((histogram * values * values).sum())
        means.append(s1 / (count * 255))  # int / int: correctly rounded
        spread = count * s2 - s1 * s1  # count**2 * variance * 255**2, exactly
        stds.append(max(math.sqrt(spread / (count * max(count - 1, 1) * 255**2)), 1e-6))
    return means, stds


def build_dataset(name: str, classes: list[str], train: Split, test: Split) -> ImageDataset:
    mean, std = channel_stats(train.images)
    return ImageDataset(name, classes, train, test, mean, std)


def read_tensor_file(name: str, path) -> ImageDataset:
    """A dataset from the tensor file format (a path or an open binary file)."""
    blob = torch.load(path, weights_only=True)
    return ImageDataset(name, list(blob["classes"]),
                        Split(blob["train_images"], blob["train_labels"]),
                        Split(blob["test_images"], blob["test_labels"]),
                        list(blob["mean"]), list(blob["std"]))


def tensor_file_contents(dataset: ImageDataset) -> dict:
    return {"classes": dataset.classes, "mean": dataset.mean, "std": dataset.std,
            "train_images": dataset.train.images, "train_labels": dataset.train.labels,
            "test_images": dataset.test.images, "test_labels": dataset.test.labels}


def write_tensor_file(dataset: ImageDataset, path: Path) -> None:
    contents = tensor_file_contents(dataset)
    atomic_write(path, lambda f: torch.save(contents, f))
