"""Making a sweep's trials: `advance` starts trials up to `max_concurrent` and ends the
sweep when its last trial has ended.

It runs wherever something may have changed: after POST /sweeps, after a trial's attempt
ends or pauses (the worker), and in every reaper pass (which is what recovers a crash in
between). It is idempotent and runs one at a time per sweep (sweep_lock); and trial n's job
has the Idempotency-Key `sweep-<id>-<n>` (and the unique index on (sweep_id, trial)), so
even two schedulers at once would make it once."""
from __future__ import annotations

import logging
import zlib
from contextlib import contextmanager

from sqlalchemy import case, func, select, text, update
from sqlalchemy.orm import Session

from core import job_submission, jobs
from core.config import Settings
from core.errors import Conflict, FieldError, NotFound
from core.quota_ledger import CapReached
from core.states import JobStatus, SweepStatus, check_transition
from core.sweeps import asha
from core.sweeps.spec import trial_job
from core.tables import Job, Sweep, utcnow
from core.tenancy import tenant_of

log = logging.getLogger(__name__)

# A paused trial holds no slot: only these count against max_concurrent.
ACTIVE = (JobStatus.queued.value, JobStatus.running.value)
# Not ended (core.states): a paused trial too, which may yet be promoted.
UNFINISHED = tuple(s.value for s in JobStatus if not s.is_terminal)


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


@contextmanager
def sweep_lock(session: Session, sweep_id: str):
    """One scheduler at a time for this sweep, across processes (a Postgres advisory lock on
    a connection of its own, held across the step's commits; released if its process dies).
    SQLite, one machine's embedded mode, serialises its writers by itself."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        yield
        return
    key = zlib.crc32(f"sweep:{sweep_id}".encode())
    with bind.connect() as lock:
        lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


def advance(session: Session, sweep_id: str, settings: Settings) -> list[str]:
    """Start the trials the sweep has room for, promoting first under asha (the ids of the
    jobs started or resumed), or end it when its last trial has ended. Commits as it goes:
    each trial is a job of its own."""
    with sweep_lock(session, sweep_id):
        sweep = session.get(Sweep, sweep_id, populate_existing=True)
        if sweep is None or sweep.status != SweepStatus.running.value:
            return []
        return _advance(session, sweep, settings)


def _advance(session: Session, sweep: Sweep, settings: Settings) -> list[str]:
    is_asha = sweep.strategy == "asha"
    if is_asha:
        asha.record_rungs(session, sweep)
    made, active, _ = _tally(session, sweep.id)
    started: list[str] = []
    waiting = None
    tenant = tenant_of(session, sweep.owner)
    while active < sweep.max_concurrent:
        row = asha.promotable(session, sweep) if is_asha else None
        if row is not None:
            started.append(asha.promote(session, sweep, row, settings))
            log.info("sweep %s: trial %d promoted from rung %d", sweep.id, row.trial, row.rung)
        elif made < sweep.max_trials:
            try:
                job_id = _start_trial(session, sweep, made, tenant, settings)
            except CapReached as exc:
                session.rollback()
                waiting = f"trial {made} waits: {exc}"  # a later step tries again
                break
            except (FieldError, NotFound, Conflict) as exc:
                # Something it needs went away since it was checked (its dataset deleted...).
                session.rollback()
                cancel_trials(session, sweep.id)
                finish(session, sweep.id, SweepStatus.failed, error=f"trial {made}: {exc}")
                session.commit()
                return started
            started += [job_id] if job_id else []
            made += 1
        else:
            break
        active += 1
    _set_waiting(session, sweep.id, waiting)
    session.commit()
    if active == 0 and made >= sweep.max_trials:
        _end(session, sweep)
    # A cancel that landed while trials were being made: the new ones go with it.
    elif started and session.scalar(select(Sweep.status).where(Sweep.id == sweep.id)) \
            != SweepStatus.running.value:
        cancel_trials(session, sweep.id)
    return started


def _start_trial(session: Session, sweep: Sweep, trial: int, tenant,
                 settings: Settings) -> str | None:
    """Trial `trial`'s job, made and sent; None when another scheduler made it first."""
    spec, values = trial_job(dict(sweep.spec), trial)
    columns = {"sweep_id": sweep.id, "trial": trial, "trial_values": values}
    if sweep.strategy == "asha":
        columns["pause_at_epoch"] = asha.first_pause(sweep)
    submitted = job_submission.submit(session, spec, tenant, settings,
                                      idempotency_key=trial_key(sweep.id, trial),
                                      columns=columns)
    if submitted.replayed:
        return None
    log.info("sweep %s: trial %d is job %s", sweep.id, trial, submitted.job.id)
    return submitted.job.id


def _end(session: Session, sweep: Sweep) -> None:
    """Every trial has ended (asha: the paused ones it never promoted are stopped now)."""
    if sweep.strategy == "asha":
        asha.stop_paused(session, sweep.id)
    made, _, succeeded = _tally(session, sweep.id)
    # Under asha a sweep of few trials may end with none at the last rung: a trial that
    # reached any rung with a value is a result (the best is at the highest rung reached).
    ok = succeeded > 0 or (sweep.strategy == "asha" and asha.any_ranked(session, sweep.id))
    if finish(session, sweep.id, SweepStatus.succeeded if ok else SweepStatus.failed,
              error=None if ok else "no trial succeeded; see the trials' errors"):
        log.info("sweep %s: %s after %d trials", sweep.id, "succeeded" if ok else "failed",
                 made)
    session.commit()


def cancel_trials(session: Session, sweep_id: str) -> list[str]:
    """Cancel the sweep's queued, paused and running trials (a running one stops at its
    loop's next check); their ids. Commits."""
    ids = list(session.scalars(select(Job.id).where(
        Job.sweep_id == sweep_id, Job.status.in_(UNFINISHED))))
    for job_id in ids:
        try:
            jobs.request_cancel(session, job_id)
        except Exception as exc:  # it ended meanwhile: nothing left to stop
            log.info("sweep %s: trial job %s: %s", sweep_id, job_id, exc)
        session.commit()
    return ids


def advance_running(session: Session, settings: Settings) -> None:
    """advance() every running sweep, and cancel what a cancelled sweep left unfinished (the
    reaper's pass: recovers a crash between a trial's end and its sweep's next step, or
    between a sweep's cancel and its trials')."""
    for sweep_id in session.scalars(select(Sweep.id).where(
            Sweep.status == SweepStatus.running.value)).all():
        try:
            advance(session, sweep_id, settings)
        except Exception as exc:
            session.rollback()
            log.warning("sweep %s: could not advance it: %s", sweep_id,
                        str(exc).splitlines()[0][:200])
    for sweep_id in session.scalars(select(Job.sweep_id).distinct().join(
            Sweep, Sweep.id == Job.sweep_id).where(
            Sweep.status == SweepStatus.cancelled.value, Job.cancel_requested.is_(False),
            Job.status.in_(UNFINISHED))).all():
        log.info("sweep %s: cancelling the trials its cancel left: %s", sweep_id,
                 cancel_trials(session, sweep_id))


def advance_after(session: Session, job_id: str, settings: Settings) -> None:
    """After a job's attempt ended: its sweep's next step, when it is a trial."""
    sweep_id = session.scalar(select(Job.sweep_id).where(Job.id == job_id))
    if sweep_id is not None:
        advance(session, sweep_id, settings)
