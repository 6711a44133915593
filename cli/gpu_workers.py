"""Which GPUs each worker process holds. By default one worker per GPU, each pinned with
CUDA_VISIBLE_DEVICES (inside it, its GPU is cuda:0); `--gpus all` or a list of indices makes
one worker hold several GPUs, for jobs with world_size > 1."""
from __future__ import annotations

import os
from dataclasses import dataclass

EACH, ALL = "each", "all"


class GpuChoiceError(ValueError):
    """A --gpus value that names no usable set of GPUs; the message says why."""


@dataclass(frozen=True)
class WorkerPlacement:
    name: str
    visible_devices: str | None  # CUDA_VISIBLE_DEVICES for it; None: leave it as it is
    gpu_count: int


def visible_ids(gpu_count: int, environ=os.environ) -> list[str]:
    """The ids that CUDA_VISIBLE_DEVICES names for the gpu_count GPUs this process sees
    (a machine's ids, or the subset a container or the user already chose)."""
    chosen = environ.get("CUDA_VISIBLE_DEVICES")
    if chosen:
        return [part.strip() for part in chosen.split(",") if part.strip()][:gpu_count]
    return [str(i) for i in range(gpu_count)]


def placements(gpus: str, gpu_count: int, name: str, environ=os.environ) -> list[WorkerPlacement]:
    """The worker processes to run for `--gpus` on a machine where gpu_count GPUs are visible.

    each: one per GPU (one GPU or none: just this one, unchanged); all: one holding every
    GPU; "0,2": one holding those (indices among the visible GPUs)."""
    ids = visible_ids(gpu_count, environ)
    if gpus == EACH:
        if gpu_count <= 1:
            return [WorkerPlacement(name, None, gpu_count)]
        node, _, host = name.partition("@")
        return [WorkerPlacement(f"{node}-gpu{i}@{host}" if host else f"{node}-gpu{i}", ids[i], 1)
                for i in range(gpu_count)]
    if gpus == ALL:
        return [WorkerPlacement(name, None, gpu_count)]
    try:
        indices = [int(part) for part in gpus.split(",")]
    except ValueError:
        raise GpuChoiceError(f"--gpus {gpus!r}: use 'each', 'all' or GPU indices such as "
                             "0,1") from None
    if gpu_count == 0:
        raise GpuChoiceError(f"--gpus {gpus!r}: this machine has no visible GPU")
    bad = [i for i in indices if not 0 <= i < gpu_count]
    if bad or len(set(indices)) != len(indices):
        raise GpuChoiceError(f"--gpus {gpus!r}: this machine has {gpu_count} visible GPU(s) "
                             f"(indices 0 to {gpu_count - 1}), each named once")
    return [WorkerPlacement(name, ",".join(ids[i] for i in indices), len(indices))]
