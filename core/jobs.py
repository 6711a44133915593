"""Every change of a job row goes through here; the state machine is enforced in SQL."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Sequence

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.ids import new_id
from core.states import ALLOWED, InvalidTransition, JobStatus, check_transition
from core.tables import Job, MetricPoint, utcnow


def create_job(session: Session, spec: dict) -> Job:
    job = Job(id=new_id(), name=spec["name"], status=JobStatus.queued.value,
              model=spec["model"], dataset=spec["dataset"], spec=spec, epoch=0, step=0,
              attempts=0, max_attempts=3, cancel_requested=False)
    session.add(job)
    return job


def transition(session: Session, job_id: str, target: JobStatus,
               from_states: frozenset[JobStatus] | None = None, **fields: Any) -> Job:
    """Move a job to target if its current state allows it, atomically; else InvalidTransition.

    The WHERE clause carries the allowed source states, so two processes racing on one
    job cannot both win, and no terminal state is ever left. from_states narrows the sources.
    """
    sources = [s.value for s, targets in ALLOWED.items()
               if target in targets and (from_states is None or s in from_states)]
    values: dict[str, Any] = {"status": target.value, "updated_at": utcnow(), **fields}
    if target.is_terminal:
        values.setdefault("finished_at", utcnow())
        values["lease_expires_at"] = None
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(sources)).values(**values)
        .execution_options(synchronize_session=False))
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise LookupError(job_id)
    if result.rowcount == 0:
        check_transition(JobStatus(job.status), target)  # raises with the current state
        raise InvalidTransition(JobStatus(job.status), target)
    return job


def claim(session: Session, job_id: str, worker: str, device: str,
          lease_seconds: int) -> Job:
    """queued -> running for this worker; InvalidTransition if anyone else got there first."""
    job = session.get(Job, job_id)
    attempts = (job.attempts if job else 0) + 1
    now = utcnow()
    return transition(session, job_id, JobStatus.running, worker=worker, device=device,
                      started_at=now, attempts=attempts,
                      lease_expires_at=now + timedelta(seconds=lease_seconds))


def request_cancel(session: Session, job_id: str) -> Job:
    """A queued job is cancelled at once; a running one is flagged for its loop to see."""
    try:
        return transition(session, job_id, JobStatus.cancelled,
                          from_states=frozenset({JobStatus.queued}))
    except InvalidTransition as exc:
        if exc.current is not JobStatus.running:
            raise
    flagged = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.running.value)
        .values(cancel_requested=True, updated_at=utcnow())
        .execution_options(synchronize_session=False))
    job = session.get(Job, job_id, populate_existing=True)
    if flagged.rowcount == 0:  # it finished in between
        raise InvalidTransition(JobStatus(job.status), JobStatus.cancelled)
    return job


def record_progress(session: Session, job_id: str, epoch: int, step: int, total_steps: int,
                    lease_seconds: int) -> bool:
    """Store progress and renew the lease; False if the job is no longer running."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.running.value)
        .values(epoch=epoch, step=step, total_steps=total_steps, updated_at=utcnow(),
                lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def cancel_requested(session: Session, job_id: str) -> bool:
    row = session.execute(select(Job.cancel_requested, Job.status).where(Job.id == job_id)).one()
    return bool(row.cancel_requested) or row.status != JobStatus.running.value


def insert_metrics(session: Session, job_id: str, points: Sequence[dict]) -> None:
    """One INSERT for many points; a point already stored (same job, name, step) is kept."""
    if not points:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    rows = [{"job_id": job_id, "time": now, **p} for p in points]
    session.execute(insert(MetricPoint).values(rows).on_conflict_do_nothing(
        index_elements=["job_id", "name", "step"]))
