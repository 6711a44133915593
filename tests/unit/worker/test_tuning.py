"""The CPU convolution choice: counted multiply-adds, a deterministic rule, nothing changed."""
from __future__ import annotations

import torch
from torch import nn

import models
from core.jobspec import Hyperparameters
from core.tensor_datasets import ImageDataset, Split
from worker import loop
from worker.control import RunControl
from worker.loop import fit
from worker.reporting import NullReporter
from worker.tuning import (
    NATIVE_CONV_MAX_MACS,
    CpuPlan,
    cpu_kernels,
    cpu_plan,
    layer_macs,
)


def test_conv_macs_counts_lenets_two_convolutions():
    lenet = models.build("lenet", (3, 32, 32), 10)
    # conv1: 6x28x28 outputs x 3x5x5; conv2: 16x10x10 outputs x 6x5x5; per image.
    assert layer_macs(lenet, torch.zeros(4, 3, 32, 32))[0] == 4 * (6 * 28 * 28 * 75 + 16 * 10 * 10 * 150)
    assert layer_macs(models.build("mlp", (1, 8, 8), 10), torch.zeros(4, 1, 8, 8))[0] == 0


def test_small_convolutions_go_native_large_ones_onednn():
    lenet = models.build("lenet", (3, 32, 32), 10)
    assert cpu_plan(lenet, torch.zeros(4, 3, 32, 32)).onednn is False  # the tutorial's batch
    assert cpu_plan(lenet, torch.zeros(32, 3, 32, 32)).onednn is True
    resnet = models.build("resnet18", (3, 32, 32), 10)
    assert cpu_plan(resnet, torch.zeros(2, 3, 32, 32)).onednn is True
    assert layer_macs(lenet, torch.zeros(8, 3, 32, 32))[0] < NATIVE_CONV_MAX_MACS


def test_counting_leaves_weights_statistics_mode_and_rng_alone():
    model = models.build("resnet18", (3, 16, 16), 10)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = torch.randn(2, 3, 16, 16)
    rng = torch.get_rng_state()
    layer_macs(model, inputs)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert all(not m._forward_hooks for m in model.modules())


def test_the_settings_are_put_back_after_the_block_even_on_error():
    before = torch.backends.mkldnn.enabled, torch.get_num_threads()
    for onednn in (True, False):
        try:
            with cpu_kernels(CpuPlan(onednn, not onednn)):
                assert torch.backends.mkldnn.enabled is onednn
                assert torch.get_num_threads() == (before[1] if onednn else 1)
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert (torch.backends.mkldnn.enabled, torch.get_num_threads()) == before


def test_fit_trains_lenet_at_batch_4_with_native_convolutions(monkeypatch):
    seen = []
    real_epoch = loop.train_one_epoch

    def spy(*args, **kwargs):
        seen.append((torch.backends.mkldnn.enabled, torch.get_num_threads()))
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", spy)
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g),
                  torch.randint(0, 10, (16,), generator=g))
    dataset = ImageDataset("t", [str(i) for i in range(10)], split, split, [0.5] * 3, [0.25] * 3)
    before = torch.backends.mkldnn.enabled, torch.get_num_threads()
    fit(models.build("lenet", (3, 32, 32), 10), dataset, Hyperparameters(epochs=2, batch_size=4),
        torch.device("cpu"), RunControl(NullReporter()))
    assert seen == [(False, 1), (False, 1)]  # native kernels, one thread
    # Evaluation and later jobs: unchanged.
    assert (torch.backends.mkldnn.enabled, torch.get_num_threads()) == before


def test_native_and_cpu_kernels_agree():
    torch.manual_seed(0)
    conv, x = nn.Conv2d(3, 6, 5), torch.randn(4, 3, 32, 32)
    with cpu_kernels(CpuPlan(False, True)):
        native = conv(x)
    with cpu_kernels(CpuPlan(True, False)):
        onednn = conv(x)
    assert torch.allclose(native, onednn, atol=1e-5)


def test_one_thread_only_where_the_linear_layers_are_small_too():
    """A small convolution in front of large linear layers (swin_t's patch embedding and
    attention at 32x32): native convolutions, but both threads."""
    lenet = models.build("lenet", (3, 32, 32), 10)
    assert cpu_plan(lenet, torch.zeros(4, 3, 32, 32)) == CpuPlan(False, True)  # unchanged
    assert cpu_plan(lenet, torch.zeros(32, 3, 32, 32)) == CpuPlan(True, False)
    # LeNet on digits at batch 64: 3.1M + 2.7M, still one thread.
    assert cpu_plan(models.build("lenet", (1, 8, 8), 10),
                    torch.zeros(64, 1, 8, 8)) == CpuPlan(False, True)
    patchy = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.Flatten(), nn.Linear(256, 8192),
                           nn.ReLU(), nn.Linear(8192, 10))
    inputs = torch.zeros(16, 3, 32, 32)
    assert layer_macs(patchy, inputs) == (16 * 4 * 8 * 8 * 48, 16 * (8192 * 256 + 10 * 8192))
    assert cpu_plan(patchy, inputs) == CpuPlan(False, False)
    mlp = models.build("mlp", (1, 8, 8), 10)  # no convolution: nothing changes
    assert cpu_plan(mlp, torch.zeros(4, 1, 8, 8)) == CpuPlan(torch.backends.mkldnn.enabled,
                                                              False)
