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


# What each target state means a job does, for a refusal's message.
_BECOMING = {JobStatus.queued: "go back to the queue", JobStatus.running: "start",
             JobStatus.succeeded: "succeed", JobStatus.failed: "fail",
             JobStatus.cancelled: "be cancelled"}


class InvalidTransition(Exception):
    def __init__(self, current: JobStatus, target: JobStatus, job_id: str | None = None):
        super().__init__(refusal(current, target, job_id))
        self.current, self.target, self.job_id = current, target, job_id


def refusal(current: JobStatus, target: JobStatus, job_id: str | None = None) -> str:
    """What a client reads (a 409's detail): where the job is, and which jobs could."""
    job = f"job {job_id}" if job_id else "the job"
    where = (f"already ended ({current.value})" if current.is_terminal
             else f"is {current.value}")
    sources = " or ".join(s.value for s, targets in ALLOWED.items() if target in targets)
    return f"{job} {where}; only a {sources} job can {_BECOMING[target]}"


def check_transition(current: JobStatus, target: JobStatus, job_id: str | None = None) -> None:
    """Raise InvalidTransition unless current -> target is an edge of the machine."""
    if target not in ALLOWED.get(current, frozenset()):
        raise InvalidTransition(current, target, job_id)


class DatasetStatus(str, Enum):
    """An upload is processing, then ready or failed; a built-in is ready (files present or
    cached), downloads on first use, or missing (absent, and downloads are off)."""

    processing = "processing"
    ready = "ready"
    failed = "failed"
    downloads_on_first_use = "downloads on first use"
    missing = "missing"
