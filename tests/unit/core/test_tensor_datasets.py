"""Per-channel statistics of uint8 images (core/tensor_datasets.py channel_stats): what a float64
computation over every value gives, in memory that does not grow with the dataset; a dataset
normalised with other statistics (pretrained weights')."""
from __future__ import annotations

import pytest
import torch

from core.tensor_datasets import channel_stats
from tests.memory import MB, Peak
from tests.unit.factories import synthetic_dataset


def reference(images: torch.Tensor) -> tuple[list[float], list[float]]:
    x = images.to(torch.float64).div(255).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(dim=1).tolist(), x.std(dim=1).tolist()


@pytest.mark.parametrize("shape", [(500, 3, 17, 13), (7, 1, 8, 8), (1, 3, 2, 2)])
def test_channel_stats_are_the_float64_figures(shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    means, stds = channel_stats(images, chunk_bytes=1000)  # many slices
    expected_means, expected_stds = reference(images)
    assert means == pytest.approx(expected_means, rel=1e-12)
    assert stds == pytest.approx(expected_stds, rel=1e-12)


def test_a_flat_channel_has_the_floor_std_and_slices_do_not_matter():
    images = torch.full((10, 2, 4, 4), 7, dtype=torch.uint8)
    images[:, 1] = torch.arange(10, dtype=torch.uint8).view(10, 1, 1)
    whole, sliced = channel_stats(images), channel_stats(images, chunk_bytes=1)
    assert whole == sliced
    assert whole[0] == [7 / 255, pytest.approx(4.5 / 255)] and whole[1][0] == 1e-6


def test_channel_stats_take_memory_that_does_not_grow_with_the_images():
    # 96 MB of images: a float64 copy of them is 768 MB, and the old way made two.
    images = torch.zeros((32, 3, 1000, 1000), dtype=torch.uint8)
    images[::2] = 255
    with Peak() as memory:
        means, stds = channel_stats(images)
    assert means == [0.5, 0.5, 0.5] and stds == pytest.approx([0.5] * 3, rel=1e-6)
    assert memory.rise < 64 * MB, str(memory)


def test_normalized_with_other_stats_is_a_new_dataset_of_the_same_images():
    dataset = synthetic_dataset(6, 2, (3, 4, 4), 2)
    assert dataset.normalized_with(None) is dataset
    other = dataset.normalized_with(([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]))
    assert (other.mean, other.std) == ([0.5] * 3, [0.25] * 3)
    assert other.train is dataset.train and other.classes == dataset.classes
    assert dataset.mean != other.mean  # the original keeps its own
