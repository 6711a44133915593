"""Making a sweep's trials: `advance` starts trials up to `max_concurrent` and ends the
sweep when its last trial has ended.

It runs wherever something may have changed: after POST /sweeps, after a trial's attempt
ends (the worker), and in every reaper pass (which is what recovers a crash in between).
It is idempotent and safe to run twice at once: trial n's job has the Idempotency-Key
`sweep-<id>-<n>` (and the unique index on (sweep_id, trial)), so a second scheduler racing
for the same number replays the first one's job; both count trials in one statement, so
neither starts more than `max_concurrent`."""
from __future__ import annotations

import logging

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from core import job_submission, jobs
from core.config import Settings
from core.errors import Conflict, FieldError, NotFound
from core.quota_ledger import CapReached
from core.states import JobStatus, SweepStatus, check_transition
from core.sweeps.spec import trial_job
from core.tables import Job, Sweep, utcnow
from core.tenancy import tenant_of

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


def trial_key(sweep_id: str, trial: int) -> str:
    return f"sweep-{sweep_id}-{trial}"


def _tally(session: Session, sweep_id: str):
    """(next trial number, active trials, succeeded trials), read in one statement."""
    return session.execute(select(
        func.coalesce(func.max(Job.trial), -1) + 1,
        func.count(case((Job.status.in_(ACTIVE), 1))),
        func.count(case((Job.status == JobStatus.succeeded.value, 1))),
    ).where(Job.sweep_id == sweep_id)).one()


def finish(session: Session, sweep_id: str, target: SweepStatus, **fields) -> bool:
    """running -> target, once: False when another process ended it first."""
    check_transition(SweepStatus.running, target, sweep_id)
    now = utcnow()
    done = session.execute(update(Sweep).where(Sweep.id == sweep_id,
                                               Sweep.status == SweepStatus.running.value)
                           .values(status=target.value, finished_at=now, updated_at=now,
                                   waiting=None, **fields)
                           .execution_options(synchronize_session=False)).rowcount
    return done == 1


def _set_waiting(session: Session, sweep_id: str, reason: str | None) -> None:
    session.execute(update(Sweep).where(Sweep.id == sweep_id, Sweep.waiting.is_distinct_from(
        reason)).values(waiting=reason, updated_at=utcnow())
        .execution_options(synchronize_session=False))


def advance(session: Session, sweep_id: str, settings: Settings) -> list[str]:
    """Start the trials the sweep has room for (their job ids), or end it when its last trial
    has ended. Commits as it goes: each trial is a job of its own."""
    sweep = session.get(Sweep, sweep_id, populate_existing=True)
    if sweep is None or sweep.status != SweepStatus.running.value:
        return []
    made, active, succeeded = _tally(session, sweep_id)
    if made >= sweep.max_trials and active == 0:
        ok = succeeded > 0
        if finish(session, sweep_id, SweepStatus.succeeded if ok else SweepStatus.failed,
                  error=None if ok else "no trial succeeded; see the trials' errors"):
            log.info("sweep %s: %s after %d trials", sweep_id,
                     "succeeded" if ok else "failed", made)
        session.commit()
        return []
    started: list[str] = []
    tenant = tenant_of(session, sweep.owner)
    stored = dict(sweep.spec)
    for trial in range(made, min(made + sweep.max_concurrent - active, sweep.max_trials)):
        try:
            spec, values = trial_job(stored, trial)
            submitted = job_submission.submit(
                session, spec, tenant, settings, idempotency_key=trial_key(sweep_id, trial),
                columns={"sweep_id": sweep_id, "trial": trial, "trial_values": values})
        except CapReached as exc:
            session.rollback()
            # The trial waits for the tenant's cap (a later pass tries again), and says so.
            _set_waiting(session, sweep_id, f"trial {trial} waits: {exc}")
            session.commit()
            break
        except (FieldError, NotFound, Conflict) as exc:
            # Something it needs went away since it was checked (its dataset deleted...).
            session.rollback()
            cancel_trials(session, sweep_id)
            finish(session, sweep_id, SweepStatus.failed, error=f"trial {trial}: {exc}")
            session.commit()
            return started
        if not submitted.replayed:
            started.append(submitted.job.id)
            log.info("sweep %s: trial %d is job %s", sweep_id, trial, submitted.job.id)
    else:
        _set_waiting(session, sweep_id, None)
    session.commit()
    # A cancel that landed while trials were being made: the new ones go with it.
    if started and session.scalar(select(Sweep.status).where(Sweep.id == sweep_id)) \
            != SweepStatus.running.value:
        cancel_trials(session, sweep_id)
    return started


def cancel_trials(session: Session, sweep_id: str) -> list[str]:
    """Cancel the sweep's queued and running trials (a running one stops at its loop's next
    check); their ids. Commits."""
    ids = list(session.scalars(select(Job.id).where(Job.sweep_id == sweep_id,
                                                    Job.status.in_(ACTIVE))))
    for job_id in ids:
        try:
            jobs.request_cancel(session, job_id)
        except Exception as exc:  # it ended meanwhile: nothing left to stop
            log.info("sweep %s: trial job %s: %s", sweep_id, job_id, exc)
        session.commit()
    return ids


def advance_running(session: Session, settings: Settings) -> None:
    """advance() every running sweep (the reaper's pass: recovers a crash between a trial's
    end and its sweep's next step)."""
    for sweep_id in session.scalars(select(Sweep.id).where(
            Sweep.status == SweepStatus.running.value)).all():
        try:
            advance(session, sweep_id, settings)
        except Exception as exc:
            session.rollback()
            log.warning("sweep %s: could not advance it: %s", sweep_id,
                        str(exc).splitlines()[0][:200])


def advance_after(session: Session, job_id: str, settings: Settings) -> None:
    """After a job's attempt ended: its sweep's next step, when it is a trial."""
    sweep_id = session.scalar(select(Job.sweep_id).where(Job.id == job_id))
    if sweep_id is not None:
        advance(session, sweep_id, settings)
