"""Where a job's dataset is held (worker/feed.py): on the device when it fits, else in host
memory and streamed a block at a time. This suite has no GPU: the CUDA decision is checked
with the free memory given, and the streamed path runs on the CPU (fraction 0 streams
always), where it must train exactly as the resident one."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import models
from core.jobspec import Hyperparameters
from core.tensor_datasets import Split
from tests.unit.factories import synthetic_dataset
from worker.control import RunControl
from worker.data import batches
from worker.feed import DeviceFeed, dataset_bytes, fits_on_device, place
from worker.loop import fit
from worker.reporting import NullReporter

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only compared and passed along: no CUDA call is made
GIB = 1024**3


def test_a_cpu_job_holds_its_dataset_where_it_is():
    assert fits_on_device(100 * GIB, CPU, 0.5)


def test_a_cuda_job_holds_what_fits_in_its_share_of_free_memory():
    assert fits_on_device(40 * GIB, CUDA, 0.5, free_bytes=80 * GIB)
    assert not fits_on_device(40 * GIB + 1, CUDA, 0.5, free_bytes=80 * GIB)
    assert fits_on_device(70 * GIB, CUDA, 1.0, free_bytes=80 * GIB)


def test_fraction_zero_streams_on_every_device():
    assert not fits_on_device(1, CPU, 0.0)
    assert not fits_on_device(1, CUDA, 0.0, free_bytes=80 * GIB)


def test_dataset_bytes_counts_images_and_labels_of_every_split():
    a = Split(torch.zeros((10, 3, 4, 4), dtype=torch.uint8), torch.zeros(10, dtype=torch.int64))
    assert dataset_bytes([a, None, a]) == 2 * (10 * 48 + 10 * 8)


def test_place_gives_a_feed_only_when_streaming():
    split = Split(torch.zeros((4, 1, 2, 2), dtype=torch.uint8), torch.arange(4))
    (held,), feed = place([split], CPU, 0.5)
    assert feed is None and torch.equal(held.images, split.images)
    (held, missing), feed = place([split, None], CPU, 0.0)
    assert isinstance(feed, DeviceFeed) and feed.device == CPU and missing is None
    assert held.images.device == CPU


def test_feed_copies_survive_the_reuse_of_its_buffers():
    feed = DeviceFeed(CPU)
    sent, got = [], []
    for i in range(5):  # more blocks than buffers: each is refilled twice
        n = 6 if i < 4 else 3  # an epoch's last block is short
        images = torch.full((n, 1, 2, 2), i, dtype=torch.uint8)
        labels = torch.arange(n) + 10 * i
        sent.append((images.clone(), labels.clone()))
        got.append(feed.send(images, labels))
        images.fill_(255)  # the caller may reuse what it sent
    for (images, labels), (out_images, out_labels) in zip(sent, got):
        assert torch.equal(out_images, images) and torch.equal(out_labels, labels)
    assert not feed.pinned  # pinned buffers are for CUDA copies only


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_dataset(64, 32, (3, 8, 8), 4, seed=1)


def test_streamed_batches_equal_resident_ones(synthetic):
    split = synthetic.train
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
    for kw in ({}, {"order": order}, {"order": order, "start_batch": 3}):
        resident = list(batches(split, 5, mean, std, **kw))
        streamed = list(batches(split, 5, mean, std, feed=DeviceFeed(CPU), **kw))
        assert len(resident) == len(streamed) > 0
        for (a, la), (b, lb) in zip(resident, streamed):
            assert torch.equal(a, b) and torch.equal(la, lb)


def _train(dataset, fraction: float, **hp):
    params = Hyperparameters(**{"epochs": 2, "batch_size": 8, "log_every": 3, "lr": 0.05,
                                "seed": 5, "validation_fraction": 0.25, **hp})
    torch.manual_seed(params.seed)
    model: nn.Module = models.build("lenet", dataset.shape, len(dataset.classes))
    reporter = NullReporter()
    result = fit(model, dataset, params, CPU,
                 RunControl(reporter, check_every_s=1e9, device_dataset_fraction=fraction))
    points = [(p.name, p.epoch, p.step, p.value) for p in reporter.points
              if p.name != "samples_per_second"]
    return points, result


def test_a_streamed_job_trains_exactly_as_a_resident_one(synthetic):
    resident, r1 = _train(synthetic, 0.5)
    streamed, r2 = _train(synthetic, 0.0)
    assert streamed == resident
    assert {p[0] for p in streamed} >= {"loss", "eval_accuracy", "val_accuracy"}
    assert r1.step == r2.step == 2 * 6  # 48 training images after validation, batch 8


def test_a_streamed_job_augments_as_a_resident_one(synthetic):
    augment = {"random_crop_padding": 2, "horizontal_flip": True}
    assert _train(synthetic, 0.0, augment=augment)[0] == _train(synthetic, 0.5,
                                                                  augment=augment)[0]
