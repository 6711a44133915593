"""A sweep's story so far, read from its rows: the sweep with its summary, and each trial's
events (created, started, finished or stopped; asha's rung reached and promoted) with when
they happened, in time order. GET /sweeps/{id}/events replays it and follows it."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.states import JobStatus
from core.sweeps.summary import Summary, summarize, trial_value
from core.tables import Job, Sweep, SweepRung


def _trial_events(sweep: Sweep, job: Job) -> list[tuple[datetime, dict]]:
    base = {"trial": job.trial, "job_id": job.id}
    happened = [(job.created_at, {"type": "trial_created", **base,
                                  "values": job.trial_values or {}})]
    if job.started_at is not None:
        happened.append((job.started_at, {"type": "trial_started", **base}))
    ended = job.finished_at or job.updated_at
    if job.status == JobStatus.stopped.value:
        happened.append((ended, {"type": "stopped", **base}))
    elif JobStatus(job.status).is_terminal:
        happened.append((ended, {"type": "trial_finished", **base, "status": job.status,
                                 "value": trial_value(sweep, job)}))
    return happened


def snapshot(session: Session, sweep_id: str) -> tuple[Sweep, Summary, list[dict]] | None:
    """The sweep, its Summary and its events so far (each with its `time`); None when it
    is gone."""
    sweep = session.get(Sweep, sweep_id, populate_existing=True)
    if sweep is None:
        return None
    happened = []
    for job in session.scalars(select(Job).where(Job.sweep_id == sweep_id)):
        happened += _trial_events(sweep, job)
    for row in session.scalars(select(SweepRung).where(SweepRung.sweep_id == sweep_id)):
        base = {"trial": row.trial, "job_id": row.job_id, "rung": row.rung}
        happened.append((row.reached_at, {"type": "rung_reached", **base, "epoch": row.epoch,
                                          "value": row.value}))
        if row.promoted_at is not None:
            happened.append((row.promoted_at, {"type": "promoted", **base}))
    happened.sort(key=lambda item: (item[0], item[1]["trial"]))
    return (sweep, summarize(session, [sweep])[sweep_id],
            [{**event, "time": when.isoformat()} for when, event in happened])
