"""Which queue a job goes to, which queues a worker consumes, and why a queued job waits.

Jobs asking for `cuda` go to `<queue>.gpu`, `cpu` jobs to `<queue>.cpu`, and `auto` jobs to
`<queue>` itself, which every worker consumes: whichever worker is free first takes them.
A worker with a GPU consumes `<queue>.gpu` and `<queue>`; one without, `<queue>.cpu` and
`<queue>`. Dataset processing goes to `<queue>` too.

A `cuda` job with `world_size` N > 1 needs one worker holding N GPUs, so it goes to
`<queue>.gpu.x<N>`, consumed by workers with at least N GPUs. CPU ranks are processes, which
any worker can start, so `cpu` and `auto` jobs route the same whatever their world_size.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

GPU_SUFFIX, CPU_SUFFIX = ".gpu", ".cpu"
HARDWARE = {"cuda": "GPU", "cpu": "CPU"}


def job_needs(spec: Mapping) -> tuple[str, int]:
    """(device, world_size) of a job's stored spec."""
    hyper = spec.get("hyperparameters") or {}
    return spec.get("device", "auto"), int(hyper.get("world_size", 1) or 1)


def job_queue(base: str, spec: Mapping) -> str:
    """The queue a job with this spec (its device, its world_size) is sent to."""
    device, world_size = job_needs(spec)
    if device == "cuda":
        return base + GPU_SUFFIX + (f".x{world_size}" if world_size > 1 else "")
    if device == "cpu":
        return base + CPU_SUFFIX
    return base


def worker_queues(base: str, gpu_count: int) -> list[str]:
    """The queues a worker holding gpu_count GPUs (0: none) consumes by default."""
    if gpu_count <= 0:
        return [base + CPU_SUFFIX, base]
    multi = [f"{base}{GPU_SUFFIX}.x{n}" for n in range(2, gpu_count + 1)]
    return [base + GPU_SUFFIX, *multi, base]


def waiting_reason(queue: str, spec: Mapping, live_queues: Iterable[str]) -> str | None:
    """Why a queued job cannot start now, or None when some live worker consumes its queue
    (then it simply waits its turn)."""
    if queue in set(live_queues):
        return None
    device, world_size = job_needs(spec)
    kind = HARDWARE.get(device)
    if kind == "GPU" and world_size > 1:
        what = f"a worker with {world_size} GPUs"
    else:
        what = f"a {kind} worker" if kind else "a worker"
    return f"waiting for {what}: no running worker consumes queue {queue!r}"
