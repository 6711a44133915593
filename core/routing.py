"""Which queue a job goes to, which queues a worker consumes, and why a queued job waits.

Jobs asking for `cuda` go to `<queue>.gpu`, `cpu` jobs to `<queue>.cpu`, and `auto` jobs to
`<queue>` itself, which every worker consumes: whichever worker is free first takes them.
A worker with a GPU consumes `<queue>.gpu` and `<queue>`; one without, `<queue>.cpu` and
`<queue>`. Dataset processing goes to `<queue>` too.
"""
from __future__ import annotations

from collections.abc import Iterable

GPU_SUFFIX, CPU_SUFFIX = ".gpu", ".cpu"
HARDWARE = {"cuda": "GPU", "cpu": "CPU"}


def job_queue(base: str, device: str) -> str:
    """The queue a job asking for device ("auto", "cpu", "cuda") is sent to."""
    if device == "cuda":
        return base + GPU_SUFFIX
    if device == "cpu":
        return base + CPU_SUFFIX
    return base


def worker_queues(base: str, has_gpu: bool) -> list[str]:
    """The queues a worker on this hardware consumes by default."""
    return [base + (GPU_SUFFIX if has_gpu else CPU_SUFFIX), base]


def waiting_reason(queue: str, device: str, live_queues: Iterable[str]) -> str | None:
    """Why a queued job cannot start now, or None when some live worker consumes its queue
    (then it simply waits its turn)."""
    if queue in set(live_queues):
        return None
    kind = HARDWARE.get(device)
    what = f"a {kind} worker" if kind else "a worker"
    return f"waiting for {what}: no running worker consumes queue {queue!r}"
