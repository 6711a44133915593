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
from typing import Iterator, NamedTuple

import torch
from torch import nn

from models import set_mode

# Up to this many convolution multiply-adds per batch the native kernels are faster.
NATIVE_CONV_MAX_MACS = 5_000_000
# Up to this many multiply-adds of convolutions and linear layers together, one thread is
# (2 idle cores, a step: LeNet on 8x8 digits at batch 64, 5.7M: 2.9 ms on one thread, 3.1
# on two; swin_t at 32x32, batch 16, 4.7M in its one convolution and ~960M in its linear
# layers: 0.80 s on one, 0.48 s on two).
ONE_THREAD_MAX_MACS = 20_000_000


class CpuPlan(NamedTuple):
    onednn: bool  # oneDNN convolutions, else PyTorch's native ones
    one_thread: bool  # one intra-op thread: each op of the step is too short to share


def layer_macs(model: nn.Module, inputs: torch.Tensor) -> tuple[int, int]:
    """Multiply-adds of model's Conv2d and of its Linear layers for one forward pass of
    inputs, by one dry pass in eval mode (no batch-norm statistics change, no dropout draws)."""
    macs = {nn.Conv2d: 0, nn.Linear: 0}

    def count_conv(module: nn.Conv2d, _args, output: torch.Tensor) -> None:
        per_output = module.in_channels // module.groups
        for size in module.kernel_size:
            per_output *= size
        macs[nn.Conv2d] += output.numel() * per_output

    def count_linear(module: nn.Linear, _args, output: torch.Tensor) -> None:
        macs[nn.Linear] += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count_conv) for m in model.modules()
             if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(count_linear) for m in model.modules()
              if isinstance(m, nn.Linear)]
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
    return macs[nn.Conv2d], macs[nn.Linear]


def cpu_plan(model: nn.Module, inputs: torch.Tensor) -> CpuPlan:
    """How training steps on batches like inputs run on the CPU. One thread only where the
    convolutions are small enough for the native kernels AND the linear layers are small
    too: swin_t's one convolution (its 4x4 patch embedding) is small at 32x32, but its
    attention's linear layers are most of its work and train faster on two."""
    unchanged = CpuPlan(torch.backends.mkldnn.enabled, False)
    if (inputs.device.type != "cpu" or not torch.backends.mkldnn.is_available()
            or not any(isinstance(m, nn.Conv2d) for m in model.modules())):
        return unchanged  # no convolution to choose kernels for: no dry pass either
    conv, linear = layer_macs(model, inputs)
    if conv == 0:
        return unchanged
    onednn = conv > NATIVE_CONV_MAX_MACS
    return CpuPlan(onednn, not onednn and conv + linear <= ONE_THREAD_MAX_MACS)



@contextlib.contextmanager
def cpu_kernels(plan: CpuPlan) -> Iterator[None]:
    """The training steps' CPU settings for a block, put back after it (process-wide: a
    worker process runs one job at a time): oneDNN convolutions on or off and, where the
    step's work is small, one intra-op thread. At that size each op is too short to share: two
    threads stall at every op's barrier, the more so beside another busy process (the API,
    Postgres), and LeNet at batch 4 on CIFAR-10 trained 20% faster on one (0.79 against
    0.99 ms a step, real images, 2 cores). torch.backends.mkldnn.flags() would set the
    switch too but warns about TF32 on every entry."""
    before = torch.backends.mkldnn.enabled, torch.get_num_threads()
    torch.backends.mkldnn.enabled = plan.onednn
    if plan.one_thread:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before[0]
        if torch.get_num_threads() != before[1]:
            torch.set_num_threads(before[1])
