"""Which CPU convolution kernels a job trains with: PyTorch's native ones or oneDNN's.

oneDNN (mkldnn) convolutions win from moderate work per batch up, but at the tutorial's
batch of 4 their per-call set-up costs more than the arithmetic. Measured forward+backward
per batch on this project's 2-core Xeon (one thread, CPU time):

    lenet batch 4:   oneDNN 0.65 ms, native 0.58 ms   (2.4M conv multiply-adds)
    lenet batch 32:  oneDNN 2.46 ms, native 4.36 ms   (19M)
    cnn batch 4:     oneDNN 2.24 ms, native 2.89 ms
    resnet18 batch 4: oneDNN 92 ms, native 174 ms

and with the worker's two threads the native LeNet step gains more (0.58 against 0.79 ms
for the whole step). The choice is made from the convolutions' multiply-adds per batch, not
by timing, so a seeded job (and its resume) computes the same sums in the same order every
time it runs on a machine. Both compute the same convolution; only the rounding differs.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from models import set_mode

# Up to this many convolution multiply-adds per batch the native kernels are faster.
NATIVE_CONV_MAX_MACS = 5_000_000


def conv_macs(model: nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-adds of model's Conv2d layers for one forward pass of inputs, by one dry pass
    in eval mode (no batch-norm statistics change, no dropout draws)."""
    macs = 0

    def count(module: nn.Conv2d, _args, output: torch.Tensor) -> None:
        nonlocal macs
        per_output = module.in_channels // module.groups
        for size in module.kernel_size:
            per_output *= size
        macs += output.numel() * per_output

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        set_mode(model, training=False)
        if hooks:
            with torch.no_grad():
                model(inputs)
    finally:
        set_mode(model, training=was_training)
        for hook in hooks:
            hook.remove()
    return macs


def use_onednn(model: nn.Module, inputs: torch.Tensor) -> bool:
    """Whether training steps on batches like inputs should use oneDNN convolutions."""
    if inputs.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return torch.backends.mkldnn.enabled
    macs = conv_macs(model, inputs)
    return torch.backends.mkldnn.enabled if macs == 0 else macs > NATIVE_CONV_MAX_MACS


@contextlib.contextmanager
def cpu_kernels(onednn: bool) -> Iterator[None]:
    """The training steps' CPU settings for a block, put back after it (process-wide: a
    worker process runs one job at a time): oneDNN convolutions on or off and, with native
    ones (small work), one intra-op thread. At that size each op is too short to share: two
    threads stall at every op's barrier, the more so beside another busy process (the API,
    Postgres), and LeNet at batch 4 on CIFAR-10 trained 20% faster on one (0.79 against
    0.99 ms a step, real images, 2 cores). torch.backends.mkldnn.flags() would set the
    switch too but warns about TF32 on every entry."""
    before = torch.backends.mkldnn.enabled, torch.get_num_threads()
    torch.backends.mkldnn.enabled = onednn
    if not onednn:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before[0]
        if torch.get_num_threads() != before[1]:
            torch.set_num_threads(before[1])
