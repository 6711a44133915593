"""fit() with a torchvision model (worker/loop.py, models.zoo): batches resized on the device
to the job's image size, grayscale repeated to three channels, and a last training batch of
one image completed for BatchNorm."""
from __future__ import annotations

import logging

import pytest
import torch

import models
from core.jobspec import Hyperparameters
from tests.unit.factories import one_torch_thread, synthetic_dataset
from worker.control import RunControl
from worker.loop import fit

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def hp(**kwargs) -> Hyperparameters:
    kwargs.setdefault("epochs", 1)
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("log_every", 1)
    return Hyperparameters(**kwargs)


def record_inputs(model) -> list[tuple[bool, tuple[int, ...]]]:
    """(training, shape) of every batch the torchvision network itself receives."""
    seen: list[tuple[bool, tuple[int, ...]]] = []
    model.net.register_forward_pre_hook(
        lambda module, args: seen.append((module.training, tuple(args[0].shape))))
    return seen


def test_a_one_image_training_batch_is_what_batchnorm_refuses_here():
    """Control for the next test: mobilenet_v3_small's maps reach 1x1 at 8x8 images."""
    torch.manual_seed(0)
    model = models.build("torchvision.mobilenet_v3_small", (1, 8, 8), 3)
    model.train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(torch.randn(1, 1, 8, 8))


def test_a_last_training_batch_of_one_image_trains_with_a_second_one():
    dataset = synthetic_dataset(9, 3, (1, 8, 8), 3)  # batches of 4, 4 and 1
    torch.manual_seed(0)
    model = models.build("torchvision.mobilenet_v3_small", dataset.shape, 3)
    seen = record_inputs(model)
    result = fit(model, dataset, hp(epochs=2), CPU, RunControl())
    assert result.step == 6 and not result.stopped  # 3 steps an epoch, as core.epochs counts
    train_batches = [shape[0] for training, shape in seen if training]
    assert train_batches[-6:] == [4, 4, 2, 4, 4, 2]


def test_a_model_without_batchnorm_keeps_its_one_image_batch():
    dataset = synthetic_dataset(9, 3, (3, 8, 8), 3)
    torch.manual_seed(0)
    model = models.build("torchvision.swin_t", dataset.shape, 3)
    seen = record_inputs(model)
    fit(model, dataset, hp(), CPU, RunControl())
    assert [shape[0] for training, shape in seen if training][-3:] == [4, 4, 1]


def test_batches_are_resized_to_image_size_and_grayscale_repeated(caplog):
    dataset = synthetic_dataset(8, 4, (1, 8, 8), 3)
    torch.manual_seed(0)
    model = models.build("torchvision.squeezenet1_1", dataset.shape, 3)
    assert model.image_size == (17, 17)  # its minimum: the default for 8x8 images
    seen = record_inputs(model)
    with caplog.at_level(logging.INFO, logger="worker.loop"):
        fit(model, dataset, hp(image_size=[24, 20]), CPU, RunControl())
    assert model.image_size == (24, 20)
    assert {shape[1:] for _, shape in seen} == {(3, 24, 20)}
    assert {training for training, _ in seen} == {True, False}  # training and evaluation
    assert "images of 8x8 are resized on the device to 24x20 (image_size)" in caplog.text


def test_the_default_image_size_is_the_dataset_s_raised_to_the_minimum():
    dataset = synthetic_dataset(4, 2, (3, 8, 12), 3)
    torch.manual_seed(0)
    model = models.build("torchvision.squeezenet1_1", dataset.shape, 3)
    models.set_image_size(model, dataset.shape, [40, 40])  # as if loaded from elsewhere
    seen = record_inputs(model)
    fit(model, dataset, hp(), CPU, RunControl())
    assert {shape[1:] for _, shape in seen} == {(3, 17, 17)}
