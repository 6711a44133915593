"""Every change of a job row goes through here; the state machine is enforced in SQL.

A running job belongs to one attempt: `attempts` is bumped by each claim and serves as the
fencing token, so a worker that lost its lease (and was replaced) can no longer write."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, text, update
from sqlalchemy.orm import Session

from core.config import get_settings
from core.errors import Conflict
from core.ids import new_id
from core.states import (
    ALLOWED,
    TERMINAL,
    InvalidTransition,
    JobStatus,
    check_transition,
)
from core.tables import Job, utcnow

log = logging.getLogger(__name__)

# Postgres advisory lock key shared by every worker's reaper: one reaps at a time.
REAPER_LOCK_KEY = 0x7472_6E72  # "trnr"


def create_job(session: Session, spec: dict, max_attempts: int | None = None) -> Job:
    job = Job(id=new_id(), name=spec["name"], status=JobStatus.queued.value,
              model=spec["model"], dataset=spec["dataset"], spec=spec, epoch=0, step=0,
              attempts=0, max_attempts=max_attempts or get_settings().max_attempts, graceful_stops=0,
              cancel_requested=False)
    session.add(job)
    return job


def transition(session: Session, job_id: str, target: JobStatus,
               from_states: frozenset[JobStatus] | None = None, attempt: int | None = None,
               unless_cancel_requested: bool = False, lease_lapsed: bool = False,
               **fields: Any) -> Job:
    """Move a job to target if its current state allows it, atomically; else InvalidTransition.

    The WHERE clause carries the allowed source states, so two processes racing on one
    job cannot both win, and no terminal state is ever left. from_states narrows the sources;
    attempt, when given, makes the change only if that attempt still holds the job;
    unless_cancel_requested, only if nobody asked to cancel it (CancelRequested if so);
    lease_lapsed, only if no worker holds a live lease on it (its worker is gone).
    """
    sources = [s.value for s, targets in ALLOWED.items()
               if target in targets and (from_states is None or s in from_states)]
    values: dict[str, Any] = {"status": target.value, "updated_at": utcnow(), **fields}
    if target.is_terminal:
        values.setdefault("finished_at", utcnow())
    if target is not JobStatus.running:
        values["lease_expires_at"] = None
    conditions = [Job.id == job_id, Job.status.in_(sources)]
    if attempt is not None:
        conditions.append(Job.attempts == attempt)
    if unless_cancel_requested:
        conditions.append(Job.cancel_requested.is_(False))
    if lease_lapsed:
        conditions.append(or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < utcnow()))
    result = session.execute(update(Job).where(*conditions).values(**values)
                             .execution_options(synchronize_session=False))
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise LookupError(job_id)
    if result.rowcount == 0:
        check_transition(JobStatus(job.status), target, job_id)  # raises with the state
        if (unless_cancel_requested and job.cancel_requested
                and (attempt is None or job.attempts == attempt)):
            raise CancelRequested(JobStatus(job.status), target, job_id)
        raise InvalidTransition(JobStatus(job.status), target, job_id)
    return job


class CancelRequested(InvalidTransition):
    """The transition was refused because the job's cancel was requested."""


def _cancel_instead(session: Session, job_id: str, attempt: int | None, source: JobStatus,
                    **fields: Any) -> Job:
    """A job whose cancel was requested ends `cancelled` rather than run (again)."""
    return transition(session, job_id, JobStatus.cancelled, from_states=frozenset({source}),
                      attempt=attempt, **fields)


def claim(session: Session, job_id: str, worker: str, device: str,
          lease_seconds: int) -> Job:
    """queued -> running for this worker, as a new attempt; InvalidTransition if the job is
    not queued (running under someone's lease, finished, or cancelled). A queued job whose
    cancel was requested (while it was being handed back) is cancelled instead."""
    job = session.get(Job, job_id)
    attempts = (job.attempts if job else 0) + 1
    now = utcnow()
    try:
        return transition(session, job_id, JobStatus.running,
                          from_states=frozenset({JobStatus.queued}),
                          unless_cancel_requested=True, worker=worker, device=device,
                          started_at=(job.started_at if job else None) or now,
                          attempts=attempts, resumed_from=None, finished_at=None,
                          lease_expires_at=now + timedelta(seconds=lease_seconds))
    except CancelRequested:
        cancelled = _cancel_instead(session, job_id, None, JobStatus.queued)
        session.commit()  # the cancel stands, though the claim raises (and its scope rolls back)
        log.info("job %s: cancelled (its cancel was requested before it could resume)", job_id)
        raise InvalidTransition(JobStatus(cancelled.status), JobStatus.running,
                                job_id) from None


def _held(job_id: str, attempt: int):
    return and_(Job.id == job_id, Job.status == JobStatus.running.value,
                Job.attempts == attempt)


def renew_lease(session: Session, job_id: str, attempt: int, lease_seconds: int) -> bool:
    """Extend this attempt's lease; False if the job is no longer running as this attempt."""
    result = session.execute(
        update(Job).where(_held(job_id, attempt))
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def record_progress(session: Session, job_id: str, epoch: int, step: int, total_steps: int,
                    lease_seconds: int, attempt: int | None = None) -> bool:
    """Store progress and renew the lease; False if the job is no longer running (as this
    attempt, when one is given)."""
    where = (_held(job_id, attempt) if attempt is not None else
             and_(Job.id == job_id, Job.status == JobStatus.running.value))
    result = session.execute(
        update(Job).where(where)
        .values(epoch=epoch, step=step, total_steps=total_steps, updated_at=utcnow(),
                lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def set_resumed_from(session: Session, job_id: str, attempt: int, epoch: int, step: int,
                     progress_epoch: int) -> None:
    """The attempt resumes in `epoch` at `step`; its progress shows `progress_epoch` (the
    epoch before, when it resumes at an epoch's first mini-batch)."""
    session.execute(update(Job).where(_held(job_id, attempt))
                    .values(resumed_from={"epoch": epoch, "step": step}, epoch=progress_epoch,
                            step=step).execution_options(synchronize_session=False))


def requeue(session: Session, job_id: str, attempt: int | None, graceful: bool,
            reason: str, final_metrics: dict | None = None) -> Job:
    """running -> queued, to be resumed from its latest checkpoint by whoever claims it next;
    or -> cancelled when its cancel was requested (the returned job says which). A graceful
    stop does not use up one of the job's max_attempts."""
    extra = {"graceful_stops": Job.graceful_stops + 1} if graceful else {}
    try:
        job = transition(session, job_id, JobStatus.queued, attempt=attempt,
                         unless_cancel_requested=True, worker=None, enqueued_at=None, **extra)
    except CancelRequested:
        job = _cancel_instead(session, job_id, attempt, JobStatus.running,
                              final_metrics=final_metrics)
        log.info("job %s: cancelled, not requeued (%s; its cancel was requested)", job_id,
                 reason)
        return job
    log.info("job %s: back to queued (%s)", job_id, reason)
    return job


def refuse_if_used(session: Session, noun: str, ref: str, column) -> None:
    """Conflict listing the unfinished jobs (queued, running, or paused: an asha trial that
    may be promoted) whose `column` (Job.dataset, Job.model) names ref: a dataset or a model
    they use cannot be deleted."""
    active = session.scalars(select(Job.id).where(
        column == ref, Job.status.not_in([s.value for s in TERMINAL]))).all()
    if active:
        raise Conflict(f"{noun} {ref} is used by {len(active)} queued, running or paused "
                       f"job(s): {', '.join(active[:5])}")


def mark_enqueued(session: Session, job_id: str) -> None:
    """Record that the job's message reached the broker (only while it is still queued)."""
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.queued.value)
                    .values(enqueued_at=utcnow())
                    .execution_options(synchronize_session=False))


def pause(session: Session, job_id: str, attempt: int, final_metrics: dict | None) -> Job:
    """running -> paused at a rung's end (an asha trial), its resume checkpoint written; or
    -> cancelled when its cancel was requested. Like a graceful stop, it does not use up one
    of max_attempts (its promotion is a new attempt)."""
    try:
        return transition(session, job_id, JobStatus.paused, attempt=attempt,
                          unless_cancel_requested=True, final_metrics=final_metrics,
                          worker=None, graceful_stops=Job.graceful_stops + 1)
    except CancelRequested:
        return _cancel_instead(session, job_id, attempt, JobStatus.running,
                               final_metrics=final_metrics)


def request_cancel(session: Session, job_id: str) -> Job:
    """A queued (or paused) job is cancelled at once; a running one is flagged for its loop
    to see, or cancelled at once when its lease has expired (its worker is gone). A job that
    goes from running back to queued meanwhile (handed back) is cancelled as a queued one."""
    while True:
        try:
            return transition(session, job_id, JobStatus.cancelled,
                              from_states=frozenset({JobStatus.queued, JobStatus.paused}))
        except InvalidTransition as exc:
            if exc.current is not JobStatus.running:
                raise
        try:
            return transition(session, job_id, JobStatus.cancelled,
                              from_states=frozenset({JobStatus.running}), lease_lapsed=True,
                              cancel_requested=True,
                              error="cancelled while its worker was unreachable")
        except InvalidTransition:
            pass  # its worker holds the lease: flag it (or it is no longer running)
        flagged = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.running.value)
            .values(cancel_requested=True, updated_at=utcnow())
            .execution_options(synchronize_session=False)).rowcount
        job = session.get(Job, job_id, populate_existing=True)
        if flagged:
            return job
        if job.status not in (JobStatus.queued.value, JobStatus.paused.value):
            raise InvalidTransition(JobStatus(job.status), JobStatus.cancelled, job_id)  # ended


def cancel_requested(session: Session, job_id: str) -> bool:
    row = session.execute(select(Job.cancel_requested, Job.status).where(Job.id == job_id)).one()
    return bool(row.cancel_requested) or row.status != JobStatus.running.value


@dataclass
class Reaped:
    requeued: list[str] = field(default_factory=list)  # lease expired: to resume
    failed: list[str] = field(default_factory=list)  # lease expired past max_attempts
    cancelled: list[str] = field(default_factory=list)  # lease expired, cancel requested
    unsent: list[str] = field(default_factory=list)  # queued, no record of a message


def reap(session: Session, enqueue_grace_seconds: float, now: datetime | None = None) -> Reaped:
    """One reaper pass, under a database lock so that many workers don't race: running jobs
    whose lease expired go back to queued (or fail after max_attempts); queued jobs whose
    message was never recorded as sent are listed for re-sending. The caller sends them
    (after this transaction commits) and records it with mark_enqueued."""
    now = now or utcnow()
    outcome = Reaped()
    if session.get_bind().dialect.name == "postgresql":
        got = session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                              {"k": REAPER_LOCK_KEY}).scalar()
        if not got:
            return outcome  # another worker is reaping right now
    expired = session.execute(
        select(Job.id, Job.attempts, Job.graceful_stops, Job.max_attempts, Job.worker,
               Job.cancel_requested)
        .where(Job.status == JobStatus.running.value, Job.lease_expires_at < now)).all()
    for job in expired:
        lost = job.attempts - job.graceful_stops
        try:
            if job.cancel_requested:  # its worker is gone: nothing is left to stop
                _cancel_instead(session, job.id, job.attempts, JobStatus.running)
                outcome.cancelled.append(job.id)
            elif lost >= job.max_attempts:
                transition(session, job.id, JobStatus.failed, attempt=job.attempts,
                           error=f"its worker was lost {lost} times (max_attempts "
                                 f"{job.max_attempts}); last on {job.worker}")
                outcome.failed.append(job.id)
            else:
                after = requeue(session, job.id, job.attempts, graceful=False,
                                reason=f"lease expired on {job.worker}; resuming from the "
                                       "latest checkpoint")
                (outcome.requeued if after.status == JobStatus.queued.value
                 else outcome.cancelled).append(job.id)
        except InvalidTransition:
            pass  # it changed under us: its worker came back, or it was cancelled
    cutoff = now - timedelta(seconds=enqueue_grace_seconds)
    outcome.unsent = list(session.scalars(
        select(Job.id).where(Job.status == JobStatus.queued.value, Job.enqueued_at.is_(None),
                             Job.updated_at < cutoff)))
    return outcome
