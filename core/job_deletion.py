"""Deleting a finished job: its row (its metric points and checkpoint rows go with it), its
artifact files, its event stream in Redis and its TensorBoard run. Plain functions, no HTTP."""
from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.orm import Session

from core import events
from core.artifacts import get_store, job_prefix
from core.config import Settings
from core.errors import Conflict
from core.states import JobStatus
from core.tables import Job
from core.tensorboard_runs import remove_job_runs

log = logging.getLogger(__name__)


def delete_job(session: Session, job: Job, settings: Settings) -> None:
    """A finished job and everything it left; Conflict while it is queued or running."""
    if not JobStatus(job.status).is_terminal:
        raise Conflict(f"job is {job.status}; cancel it and wait for it to end first")
    job_id = job.id
    session.delete(job)  # metric points and checkpoint rows go by ON DELETE CASCADE
    session.commit()
    get_store().delete_prefix(job_prefix(job_id))
    drop_event_stream(job_id, settings.redis_url)
    drop_tensorboard_runs(job_id, settings.tensorboard_dir)


def drop_tensorboard_runs(job_id: str, tensorboard_dir: Path) -> None:
    """The job's TensorBoard run, where this process shares the worker's data dir; workers on
    disks of their own remove theirs in the reaper's pass (worker.reaper)."""
    try:
        remove_job_runs(tensorboard_dir, job_id)
    except OSError as exc:  # the workers' pass removes it later
        log.warning("job %s: could not delete its TensorBoard run: %s", job_id, exc)


def drop_event_stream(job_id: str, redis_url: str | None) -> None:
    if not redis_url:
        return
    try:
        events.connect(redis_url).delete(events.stream_key(job_id))
    except Exception as exc:  # it expires on its own within a day
        log.warning("job %s: could not delete its event stream: %s", job_id, exc)
