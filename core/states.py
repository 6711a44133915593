"""The job state machine (queued -> running -> succeeded | failed | cancelled), and the
statuses a dataset shows."""
from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})

ALLOWED = {
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.failed, JobStatus.cancelled}),
    # running -> queued: handed back by a graceful stop, or requeued by the reaper after its
    # worker was lost; it resumes from its latest checkpoint.
    JobStatus.running: frozenset({JobStatus.queued, JobStatus.succeeded, JobStatus.failed,
                                  JobStatus.cancelled}),
}


class InvalidTransition(Exception):
    def __init__(self, current: JobStatus, target: JobStatus):
        super().__init__(f"job is {current.value}; it cannot become {target.value}")
        self.current, self.target = current, target


def check_transition(current: JobStatus, target: JobStatus) -> None:
    """Raise InvalidTransition unless current -> target is an edge of the machine."""
    if target not in ALLOWED.get(current, frozenset()):
        raise InvalidTransition(current, target)


class DatasetStatus(str, Enum):
    """An upload is processing, then ready or failed; a built-in is ready (files present or
    cached), downloads on first use, or missing (absent, and downloads are off)."""

    processing = "processing"
    ready = "ready"
    failed = "failed"
    downloads_on_first_use = "downloads on first use"
    missing = "missing"
