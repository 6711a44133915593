"""Datasets as uint8 tensors: the digits split, the tensor cache, batching, validation splits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import worker.data as data
from core.builtin_datasets import BUILTIN_DATASETS
from core.epochs import num_batches
from core.tensor_datasets import ImageDataset, Split, channel_stats
from worker.data import (
    DatasetUnavailable,
    batches,
    complete_last_batch,
    digits_split,
    load_dataset,
    shard_order,
    split_validation,
)


def load_digits_dataset(tmp_path) -> ImageDataset:
    return load_dataset("digits", tmp_path / "datasets", tmp_path / "cache", allow_download=False)


def assert_same_dataset(a: ImageDataset, b: ImageDataset) -> None:
    assert (a.name, a.classes, a.mean, a.std) == (b.name, b.classes, b.mean, b.std)
    for x, y in ((a.train.images, b.train.images), (a.train.labels, b.train.labels),
                 (a.test.images, b.test.images), (a.test.labels, b.test.labels)):
        assert x.dtype == y.dtype and torch.equal(x, y)


# ---- digits ---------------------------------------------------------------------------------

def test_digits_is_sklearns_stratified_split_scaled_to_bytes(tmp_path):
    dataset = load_digits_dataset(tmp_path)
    assert (len(dataset.train), len(dataset.test)) == (1437, 360)
    assert dataset.classes == [str(i) for i in range(10)]
    assert dataset.shape == (1, 8, 8) == BUILTIN_DATASETS["digits"].shape
    assert dataset.train.images.dtype == torch.uint8 and dataset.train.labels.dtype == torch.int64

    digits = load_digits()  # rebuilt here independently, as docs/concepts.md says anyone can
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.2, stratify=digits.target, random_state=0)

    def to_bytes(x: np.ndarray) -> np.ndarray:  # round(v * 255 / 16), halves up
        return np.floor(x * 255 / 16 + 0.5).astype(np.uint8).reshape(-1, 1, 8, 8)

    assert np.array_equal(dataset.train.images.numpy(), to_bytes(x_train))
    assert np.array_equal(dataset.test.images.numpy(), to_bytes(x_test))
    assert np.array_equal(dataset.train.labels.numpy(), y_train)
    assert np.array_equal(dataset.test.labels.numpy(), y_test)
    assert int(dataset.train.images.max()) == 255 and int(dataset.train.images.min()) == 0
    # stratified: every class in both splits in about the same proportion
    assert np.bincount(y_test, minlength=10).min() >= 35

    mean, std = channel_stats(dataset.train.images)
    assert dataset.mean == pytest.approx(mean) and dataset.std == pytest.approx(std)
    pixels = dataset.train.images.double() / 255
    assert dataset.mean[0] == pytest.approx(pixels.mean().item())
    assert dataset.std[0] == pytest.approx(pixels.std().item())


def test_digits_split_keeps_sklearns_raw_values():
    x_train, x_test, y_train, y_test = digits_split()
    assert x_train.shape == (1437, 8, 8) and x_test.shape == (360, 8, 8)
    assert x_train.max() == 16 and x_train.min() == 0
    assert len(y_train) == 1437 and len(y_test) == 360


# ---- the tensor cache -----------------------------------------------------------------------

def test_cache_is_written_on_first_load_and_read_on_the_second(tmp_path, monkeypatch):
    cache_file = tmp_path / "cache" / "digits.pt"
    assert not cache_file.exists()
    first = load_digits_dataset(tmp_path)
    assert cache_file.is_file()
    assert [p.name for p in cache_file.parent.iterdir()] == ["digits.pt"]  # no temp file left
    blob = torch.load(cache_file, weights_only=True)
    assert torch.equal(blob["train_images"], first.train.images)
    assert torch.equal(blob["test_labels"], first.test.labels)

    def no_rebuild():
        raise AssertionError("the second load must come from the cache")

    monkeypatch.setattr(data, "_load_digits", no_rebuild)
    monkeypatch.setattr(data, "digits_split", no_rebuild)
    second = load_digits_dataset(tmp_path)
    assert_same_dataset(first, second)


@pytest.mark.parametrize("content", [
    b"",                                   # torn: an empty file
    b"this is not a torch file" * 10,      # garbage
    None,                                  # a valid torch file of something else
])
def test_an_unreadable_cache_file_is_ignored_and_rebuilt(tmp_path, content):
    fresh = load_digits_dataset(tmp_path / "fresh")
    cache_file = tmp_path / "cache" / "digits.pt"
    cache_file.parent.mkdir(parents=True)
    if content is None:
        torch.save({"something": torch.zeros(3)}, cache_file)
    else:
        cache_file.write_bytes(content)

    rebuilt = load_digits_dataset(tmp_path)
    assert_same_dataset(fresh, rebuilt)
    blob = torch.load(cache_file, weights_only=True)  # replaced by a good one
    assert torch.equal(blob["train_images"], fresh.train.images)


def test_unknown_dataset_is_unavailable(tmp_path):
    with pytest.raises(DatasetUnavailable, match="nope"):
        load_dataset("nope", tmp_path, tmp_path / "cache", allow_download=False)


@pytest.mark.parametrize("name", ["cifar10", "mnist", "fashion_mnist"])
def test_missing_torchvision_files_without_downloads_say_where_to_put_them(tmp_path, name):
    root = tmp_path / "datasets"
    cache = tmp_path / "cache"
    info = BUILTIN_DATASETS[name]
    with pytest.raises(DatasetUnavailable) as excinfo:
        load_dataset(name, root, cache, allow_download=False)
    message = str(excinfo.value)
    assert str(root / info.folder) in message
    assert info.files
    for file_name in info.files:
        assert file_name in message
    assert "download" in message.lower()
    assert not (cache / f"{name}.pt").exists()
    # nothing was fetched
    assert not any(p.is_file() for p in root.rglob("*"))


# ---- batches --------------------------------------------------------------------------------

def make_split(n: int, shape=(2, 3, 3), seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    return Split(images, torch.arange(n, dtype=torch.int64))  # labels double as sample ids


def stats(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = channel_stats(split.images)
    return torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)


def test_shuffled_batches_cover_every_sample_once_per_epoch_normalised():
    split = make_split(10)
    original = split.images.clone()
    mean, std = stats(split)
    generator = torch.Generator().manual_seed(0)
    orders = []
    for _ in range(3):
        seen = []
        sizes = []
        for inputs, labels in batches(split, 4, mean, std, generator):
            assert inputs.dtype == torch.float32 and labels.dtype == torch.int64
            assert inputs.shape == (len(labels), 2, 3, 3)
            expected = (split.images[labels].float() / 255 - mean) / std
            assert torch.allclose(inputs, expected, atol=1e-6)
            seen.extend(labels.tolist())
            sizes.append(len(labels))
        assert sizes == [4, 4, 2]
        assert sorted(seen) == list(range(10))
        orders.append(seen)
    assert orders[0] != list(range(10))  # shuffled
    assert orders[0] != orders[1] or orders[1] != orders[2]  # a new order each epoch
    assert torch.equal(split.images, original)  # the source is never modified


def test_shuffle_order_is_reproducible_for_a_seed():
    split = make_split(17)
    mean, std = stats(split)

    def epoch_order(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return [i for _, labels in batches(split, 5, mean, std, gen) for i in labels.tolist()]

    assert epoch_order(3) == epoch_order(3)
    assert epoch_order(3) != epoch_order(4)


def test_unshuffled_batches_keep_order_and_normalise_to_zero_mean_unit_std():
    split = make_split(64, shape=(3, 4, 4))
    mean, std = stats(split)
    chunks = list(batches(split, 64, mean, std))
    assert len(chunks) == 1
    inputs, labels = chunks[0]
    assert labels.tolist() == list(range(64))
    per_channel = inputs.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel.std(1), torch.ones(3), atol=1e-4)
    assert [len(lab) for _, lab in batches(split, 30, mean, std)] == [30, 30, 4]


def test_num_batches_rounds_up():
    assert [num_batches(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


# ---- validation split -----------------------------------------------------------------------

def test_split_validation_is_reproducible_disjoint_and_complete():
    train = make_split(50)
    rest, val = split_validation(train, 0.2, seed=5)
    assert (len(rest), len(val)) == (40, 10)
    ids_rest, ids_val = set(rest.labels.tolist()), set(val.labels.tolist())
    assert not ids_rest & ids_val
    assert ids_rest | ids_val == set(range(50))
    # images travel with their labels
    assert torch.equal(val.images, train.images[val.labels])
    assert torch.equal(rest.images, train.images[rest.labels])

    again_rest, again_val = split_validation(train, 0.2, seed=5)
    assert torch.equal(again_val.labels, val.labels)
    assert torch.equal(again_rest.labels, rest.labels)
    _, other_val = split_validation(train, 0.2, seed=6)
    assert set(other_val.labels.tolist()) != ids_val


def test_split_validation_sizes_and_no_split_at_zero():
    train = make_split(7)
    assert split_validation(train, 0.0, 0) == (train, None)
    rest, val = split_validation(train, 0.01, 0)  # at least one sample held out
    assert (len(rest), len(val)) == (6, 1)
    rest, val = split_validation(make_split(1437), 0.5, 0)
    assert len(val) == round(1437 * 0.5) and len(rest) + len(val) == 1437


def test_split_to_device_and_len():
    split = make_split(3)
    moved = split.to(torch.device("cpu"))
    assert len(moved) == 3 and torch.equal(moved.images, split.images)


def test_split_to_device_gives_images_in_nchw_memory_order():
    """A tensor file written with (N, H, W, C) strides (uploads before they were stored
    contiguous) trains from plain NCHW memory: channels-last batches halved CPU speed."""
    split = make_split(3)
    nhwc = Split(split.images.contiguous(memory_format=torch.channels_last), split.labels)
    assert not nhwc.images.is_contiguous()
    moved = nhwc.to(torch.device("cpu"))
    assert moved.images.is_contiguous() and torch.equal(moved.images, split.images)


@pytest.mark.parametrize("batch_size, fraction", [(4, 0.0), (4, 0.2), (7, 0.5), (1437, 0.0)])
def test_steps_per_epoch_agrees_with_the_loaded_digits(tmp_path, batch_size, fraction):
    from core.builtin_datasets import BUILTIN_DATASETS
    from core.datasets import DatasetView
    from core.epochs import steps_per_epoch

    info = BUILTIN_DATASETS["digits"]
    view = DatasetView("digits", "digits", info.shape, info.classes, info.train_size, True)
    dataset = load_digits_dataset(tmp_path)
    train, _ = split_validation(dataset.train, fraction, seed=0)
    assert steps_per_epoch(view.train_size, batch_size, fraction) == num_batches(len(train), batch_size)


def test_batches_cross_normalisation_blocks_unchanged(monkeypatch):
    """Batches are normalised a block at a time; with blocks of 3 batches (and a short last
    block and batch) every batch equals the one normalised on its own."""
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (23, 3, 4, 4), dtype=torch.uint8, generator=g),
                  torch.arange(23))
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, -1, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, -1, 1, 1)
    monkeypatch.setattr(data, "BLOCK_BYTES", 3 * 2 * 4 * 3 * 4 * 4)  # 3 batches of 2 images
    order = torch.randperm(23, generator=g)
    got = list(batches(split, 2, mean, std, order=order, start_batch=1))
    assert len(got) == 11  # batches 2..12 of 12; the last holds one image
    for i, (inputs, labels) in enumerate(got, start=1):
        idx = order[2 * i:2 * i + 2]
        assert torch.equal(labels, split.labels[idx])
        assert torch.allclose(inputs, (split.images[idx].float() / 255 - mean) / std)


# ---- a last training batch of one image (BatchNorm) ----------------------------------------

def last_shares(order: torch.Tensor, batch_size: int, world_size: int) -> list[int]:
    """Images each rank trains on in the epoch's last mini-batch."""
    per_rank = batch_size // world_size
    shares = [len(shard_order(order, r, world_size)) for r in range(world_size)]
    return [n - per_rank * ((n - 1) // per_rank) for n in shares]


@pytest.mark.parametrize("n, batch_size, world_size", [
    (9, 4, 1), (5, 2, 1), (1, 4, 1), (9, 8, 2), (10, 8, 2), (17, 8, 4), (13, 4, 2)])
def test_a_last_batch_too_small_for_batchnorm_gets_images_from_the_order_s_start(
        n, batch_size, world_size):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    completed = complete_last_batch(order, batch_size, 2, world_size)
    assert torch.equal(completed[:n], order)  # the epoch's own order first, unchanged
    added = completed[n:]
    assert torch.equal(added, order.repeat(len(added))[:len(added)])
    assert num_batches(len(completed), batch_size) == num_batches(n, batch_size)  # same steps
    assert min(last_shares(completed, batch_size, world_size)) >= 2


@pytest.mark.parametrize("n, batch_size, world_size, min_images", [
    (9, 4, 1, 1),  # a built-in model: never completed
    (8, 4, 1, 2),  # no short batch
    (10, 4, 1, 2),  # a last batch of 2 already
    (9, 1, 1, 2),  # every batch holds one image: nothing to complete
    (9, 2, 2, 2),  # one image per rank per batch, likewise
])
def test_an_order_that_needs_nothing_is_returned_as_it_is(n, batch_size, world_size,
                                                          min_images):
    order = torch.arange(n)
    assert complete_last_batch(order, batch_size, min_images, world_size) is order
