"""Where a job's dataset is held while it trains, and how blocks of it reach the device.

On a CUDA device the whole uint8 dataset normally sits in device memory (a gather per block,
no host copy per batch). A dataset that would take more than `device_dataset_fraction` of
the device's free memory stays in host memory instead, and batches() sends it a block at a
time through a DeviceFeed: the block is gathered on the host, copied into one of two pinned
buffers and queued to the device without blocking, so the host gathers the next block while
the device trains on this one (what a DataLoader with pin_memory does per batch, done per
block of whole batches from the in-memory tensor).
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from core.tensor_datasets import Split

log = logging.getLogger(__name__)

GIB = 1024**3


def dataset_bytes(splits: Sequence[Split | None]) -> int:
    return sum(s.images.nbytes + s.labels.nbytes for s in splits if s is not None)


def fits_on_device(need_bytes: int, device: torch.device, fraction: float,
                   free_bytes: int | None = None) -> bool:
    """Whether a dataset of need_bytes is held on `device` rather than streamed to it.

    fraction 0 streams always (on any device: the path stays testable without a GPU); a CPU
    device otherwise holds everything (host memory is where the dataset already is); a CUDA
    device holds it when it takes at most `fraction` of the device's free memory (free_bytes,
    read from the device when not given), leaving the rest to the model and activations."""
    if fraction <= 0:
        return False
    if device.type != "cuda":
        return True
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return need_bytes <= fraction * free_bytes


def place(splits: Sequence[Split | None], device: torch.device,
          fraction: float) -> tuple[list[Split | None], DeviceFeed | None]:
    """The splits where they will be held, and the feed that streams them when that is not
    `device` (None when they are on it)."""
    need = dataset_bytes(splits)
    if fits_on_device(need, device, fraction):
        return [s.to(device) if s is not None else None for s in splits], None
    log.info("dataset (%.2f GiB) held in host memory and streamed to %s a block at a time: "
             "it takes more than %.0f%% of the device's free memory "
             "(TRAINHUB_DEVICE_DATASET_FRACTION)", need / GIB, device, fraction * 100)
    host = torch.device("cpu")
    return [s.to(host) if s is not None else None for s in splits], DeviceFeed(device)


class DeviceFeed:
    """Copies host blocks (uint8 images and their labels) to `device`, through two pinned
    staging buffers used in turn when the device is CUDA (plain copies elsewhere).

    A buffer is refilled only after the copy queued from it last time has finished (its
    event): with two, that copy was queued a whole block earlier, so the wait is rare."""

    SLOTS = 2

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.pinned = self.device.type == "cuda"
        self._buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * self.SLOTS
        self._copied: list[torch.cuda.Event | None] = [None] * self.SLOTS
        self._turn = 0

    def send(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) on the device; the arguments may be reused once this returns."""
        slot = self._turn
        self._turn = (slot + 1) % self.SLOTS
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()
        image_buf, label_buf = self._buffer(slot, images, labels)
        n = images.shape[0]
        staged_images, staged_labels = image_buf[:n], label_buf[:n]
        staged_images.copy_(images)
        staged_labels.copy_(labels)
        # copy=True: on a CPU device (the tests' streamed path) the result must not be the
        # staging buffer itself, which the block after next overwrites.
        out = (staged_images.to(self.device, non_blocking=self.pinned, copy=True),
               staged_labels.to(self.device, non_blocking=self.pinned, copy=True))
        if self.pinned:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self._copied[slot] = event
        return out

    def _buffer(self, slot: int, images: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The slot's buffers, (re)made when this block is larger than they are (the first
        block is the largest: only an epoch's last block is short)."""
        held = self._buffers[slot]
        if held is None or held[0].shape[0] < images.shape[0] \
                or held[0].shape[1:] != images.shape[1:]:
            held = (torch.empty(images.shape, dtype=images.dtype, pin_memory=self.pinned),
                    torch.empty(labels.shape, dtype=labels.dtype, pin_memory=self.pinned))
            self._buffers[slot] = held
        return held
