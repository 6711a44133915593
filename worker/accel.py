"""The training step's opt-in speed and augmentation options (docs/concepts.md): torch.compile
with an eager fallback, autocast (amp) with a GradScaler for fp16, channels_last, and random
crop / horizontal flip drawn on the device. All off, the loop computes exactly as without them.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from worker.feed import DeviceFeed

log = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Added to the job's seed for the augmentation generator: its draws are not the shuffle's.
AUGMENT_SEED_OFFSET = 0x5EED


class Accel:
    """What one job's training and evaluation steps use of the options in its hyperparameters.

    `forward` is the callable the training step runs the model through: torch.compile(net)
    when hp.compile, else net itself. The compiled module shares net's parameters, and the
    state that is saved is always the plain model's (no `_orig_mod.` names)."""

    def __init__(self, net: nn.Module, hp, device: torch.device) -> None:
        self.device = device
        self.dtype = AMP_DTYPES.get(getattr(hp, "amp", "off"))
        self.channels_last = bool(getattr(hp, "channels_last", False))
        self.want_compile = bool(getattr(hp, "compile", False))
        self.use(net)
        aug = getattr(hp, "augment", None)
        self.padding = aug.random_crop_padding if aug is not None else 0
        self.flip = bool(aug.horizontal_flip) if aug is not None else False
        # worker.feed's DeviceFeed when the dataset is held in host memory (fit sets it).
        self.feed: DeviceFeed | None = None

    # ---- compile -------------------------------------------------------------------------

    def use(self, net: nn.Module) -> None:
        """Train `net` (the model, or its DDP wrapper): compiled when asked for. torch.compile
        only wraps here; it compiles at the first call, inside the training step."""
        self.net, self.forward, self.compiled = net, net, False
        if self.want_compile:
            try:
                self.forward = torch.compile(net)
                self.compiled = True
            except Exception as exc:  # torch.compile itself may refuse (no backend)
                self.fall_back(exc)

    def fall_back(self, exc: BaseException) -> None:
        """Eager from now on: compilation, or a compiled call, failed."""
        log.warning("torch.compile failed (%s: %s); training continues in eager mode",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        self.forward, self.compiled = self.net, False

    # ---- amp -----------------------------------------------------------------------------

    def autocast(self):
        """torch.autocast on the job's device with the amp dtype; nothing when amp is off."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def make_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling (its gradients underflow); bf16 and off do not."""
        if self.dtype is torch.float16:
            return torch.amp.GradScaler(self.device.type)
        return None

    # ---- memory format -------------------------------------------------------------------

    def prepare_model(self, model: nn.Module) -> None:
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

    def inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    # ---- augmentation --------------------------------------------------------------------

    @property
    def augments(self) -> bool:
        return self.padding > 0 or self.flip

    def augment_generator(self, seed: int) -> torch.Generator | None:
        """The augmentation draws' generator on the job's device, seeded from the job's seed
        (the same on every DDP rank: their images differ, and a resume restores one state)."""
        if not self.augments:
            return None
        return torch.Generator(device=self.device).manual_seed(seed + AUGMENT_SEED_OFFSET)

    def augment(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment_batch(inputs, self.padding, self.flip, generator)


def augment_batch(inputs: torch.Tensor, padding: int, flip: bool,
                  generator: torch.Generator) -> torch.Tensor:
    """Random crop (of the batch zero-padded by `padding` on every side; zero is the mean
    pixel of the normalised images) and horizontal flip (p=0.5 per image) of a normalised
    (N, C, H, W) batch, in one gather on its device, drawn from `generator`: no host sync."""
    if inputs.dim() != 4 or (padding <= 0 and not flip):
        return inputs
    n, c, h, w = inputs.shape
    device = inputs.device
    rows = torch.arange(h, device=device).expand(n, h)
    cols = torch.arange(w, device=device).expand(n, w)
    source = inputs
    if padding > 0:
        source = F.pad(inputs, (padding, padding, padding, padding))
        offsets = torch.randint(0, 2 * padding + 1, (2, n, 1), device=device,
                                generator=generator)
        rows, cols = rows + offsets[0], cols + offsets[1]
    if flip:
        flipped = torch.rand((n, 1), device=device, generator=generator) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    batch = torch.arange(n, device=device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=device).view(1, c, 1, 1)
    return source[batch, channel, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
