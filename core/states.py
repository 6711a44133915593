"""The state machines: a job's (queued -> running -> succeeded | failed | cancelled; an
asha sweep's trial also running -> paused -> queued | stopped), an
uploaded dataset's (processing -> ready | failed) and a sweep's (running -> succeeded |
failed | cancelled); the one list of each's terminal states."""
from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    # An asha sweep's trial at a rung's end: its checkpoint kept, waiting to be promoted
    # (back to queued, to resume to the next rung) or stopped.
    paused = "paused"
    stopped = "stopped"  # a trial its sweep never promoted: an end, not a failure

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled,
                      JobStatus.stopped})

ALLOWED = {
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.failed, JobStatus.cancelled}),
    # running -> queued: handed back by a graceful stop, or requeued by the reaper after its
    # worker was lost; it resumes from its latest checkpoint.
    JobStatus.running: frozenset({JobStatus.queued, JobStatus.succeeded, JobStatus.failed,
                                  JobStatus.cancelled, JobStatus.paused}),
    JobStatus.paused: frozenset({JobStatus.queued, JobStatus.stopped, JobStatus.cancelled}),
}


class DatasetStatus(str, Enum):
    """An upload is processing, then ready or failed; a built-in is ready (files present or
    cached), downloads on first use, or missing (absent, and downloads are off)."""

    processing = "processing"
    ready = "ready"
    failed = "failed"
    downloads_on_first_use = "downloads on first use"
    missing = "missing"

    @property
    def is_terminal(self) -> bool:
        return self in DATASET_TERMINAL


# An upload's row: a worker decodes it (ready) or it fails (rejected, or never queued). A
# built-in's status is computed from its files, never stored: it has no moves.
DATASET_TERMINAL = frozenset({DatasetStatus.ready, DatasetStatus.failed})

DATASET_ALLOWED = {
    DatasetStatus.processing: frozenset({DatasetStatus.ready, DatasetStatus.failed}),
}


class SweepStatus(str, Enum):
    """A sweep runs until every trial it will make has ended (succeeded: at least one trial
    succeeded; failed: none did) or it is cancelled."""

    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self is not SweepStatus.running


SWEEP_ALLOWED = {
    SweepStatus.running: frozenset({SweepStatus.succeeded, SweepStatus.failed,
                                    SweepStatus.cancelled}),
}

Status = JobStatus | DatasetStatus | SweepStatus


# What each target state means a record does, for a refusal's message.
_BECOMING = {JobStatus.queued: "go back to the queue", JobStatus.running: "start",
             JobStatus.succeeded: "succeed", JobStatus.failed: "fail",
             JobStatus.cancelled: "be cancelled", JobStatus.paused: "pause",
             JobStatus.stopped: "be stopped", DatasetStatus.ready: "become ready",
             DatasetStatus.failed: "fail"}


def allowed_moves(status: Status) -> dict:
    """The machine status belongs to: each source state with the states it may move to."""
    if isinstance(status, SweepStatus):
        return SWEEP_ALLOWED
    return DATASET_ALLOWED if isinstance(status, DatasetStatus) else ALLOWED


class InvalidTransition(Exception):
    def __init__(self, current: Status, target: Status, job_id: str | None = None):
        super().__init__(refusal(current, target, job_id))
        self.current, self.target, self.job_id = current, target, job_id


def refusal(current: Status, target: Status, record_id: str | None = None) -> str:
    """What a client reads (a 409's detail): where the job (or dataset) is, and which could."""
    noun = ("dataset" if isinstance(current, DatasetStatus)
            else "sweep" if isinstance(current, SweepStatus) else "job")
    record = f"{noun} {record_id}" if record_id else f"the {noun}"
    where = (f"already ended ({current.value})" if current.is_terminal
             else f"is {current.value}")
    names = [s.value for s, targets in allowed_moves(current).items() if target in targets]
    sources = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 2 else names)
    becoming = _BECOMING.get(target, f"become {target.value}")
    if not sources:
        return f"{record} {where}; no {noun} can {becoming}"
    return f"{record} {where}; only a {sources} {noun} can {becoming}"


def check_transition(current: Status, target: Status, record_id: str | None = None) -> None:
    """Raise InvalidTransition unless current -> target is an edge of its machine."""
    if target not in allowed_moves(current).get(current, frozenset()):
        raise InvalidTransition(current, target, record_id)
