"""Creating, cancelling and deleting a sweep. Plain functions of a session, no HTTP."""
from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import job_submission
from core.config import Settings
from core.errors import Conflict, FieldError
from core.ids import new_id
from core.job_deletion import delete_job
from core.jobspec import JobSpec
from core.states import InvalidTransition, SweepStatus
from core.sweeps import trials as scheduler
from core.sweeps.spec import SweepSpec, check
from core.tables import Job, Sweep
from core.tenancy import Tenant

log = logging.getLogger(__name__)


def _check_resolvable(session: Session, specs: list[JobSpec], tenant: Tenant,
                      searched: set[str]) -> None:
    """Each distinct model, dataset and init_from the trials name exists for the tenant and
    fits (core.job_submission.prepare's checks, which read the database), at the field that
    chose it."""
    seen = set()
    for spec in specs:
        key = (spec.model, spec.dataset, spec.init_from and spec.init_from.model_dump_json())
        if key in seen:
            continue
        seen.add(key)
        try:
            job_submission.prepare(session, spec, tenant, None)
        except FieldError as exc:
            where = "space" if exc.field in searched else "base"
            raise FieldError(f"{where}.{exc.field}", exc.message) from None


def create_sweep(session: Session, spec: SweepSpec, tenant: Tenant,
                 settings: Settings) -> Sweep:
    """Check every trial, store the sweep (running) and start its first trials."""
    checked, trial_specs = check(spec)
    _check_resolvable(session, trial_specs, tenant, set(spec.space))
    stored = checked.stored()
    sweep = Sweep(id=new_id(), owner=tenant.user_id, name=checked.name,
                  status=SweepStatus.running.value, strategy=spec.strategy,
                  metric=spec.metric, mode=checked.mode, max_trials=checked.max_trials,
                  max_concurrent=spec.max_concurrent, seed=spec.seed, spec=stored)
    session.add(sweep)
    session.commit()
    log.info("sweep %s: %s, %d trials, %d at a time", sweep.id, spec.strategy,
             checked.max_trials, spec.max_concurrent)
    scheduler.advance(session, sweep.id, settings)
    return session.get(Sweep, sweep.id, populate_existing=True)


def cancel_sweep(session: Session, sweep: Sweep) -> Sweep:
    """running -> cancelled, and its queued and running trials cancelled; a sweep that
    already ended: InvalidTransition (a 409 naming its status)."""
    if not scheduler.finish(session, sweep.id, SweepStatus.cancelled):
        session.rollback()
        current = session.get(Sweep, sweep.id, populate_existing=True)
        raise InvalidTransition(SweepStatus(current.status), SweepStatus.cancelled, sweep.id)
    session.commit()
    scheduler.cancel_trials(session, sweep.id)
    return session.get(Sweep, sweep.id, populate_existing=True)


def delete_sweep(session: Session, sweep: Sweep, settings: Settings) -> None:
    """An ended sweep with its trial jobs (and all they left); Conflict while it runs or a
    trial has not ended yet (a cancelled sweep's trials stop within the cancel bound)."""
    if sweep.status == SweepStatus.running.value:
        raise Conflict(f"sweep {sweep.id} is running; cancel it first")
    trials = list(session.scalars(select(Job).where(Job.sweep_id == sweep.id)))
    busy = [job.id for job in trials if job.status in scheduler.UNFINISHED]
    if busy:
        raise Conflict(f"sweep {sweep.id} has {len(busy)} trial(s) still stopping: "
                       f"{', '.join(busy[:5])}; retry in a few seconds")
    for job in trials:
        delete_job(session, job, settings)
    session.delete(sweep)
    session.commit()
