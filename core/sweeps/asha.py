"""ASHA (asynchronous successive halving, Li et al. 2020) on a sweep's trials: the rungs,
recording a trial that reached one, which paused trial to promote, and stopping the rest.

Rungs are at min_epochs × η^k epochs, up to max_epochs (always the last). A trial trains
with `epochs` = max_epochs (so a schedule spans max_epochs) and pauses at its rung's end.
When a slot is free, the top rung down, the first trial among the best ⌊n/η⌋ of the n that
reached a rung that is paused there and not yet promoted goes on to the next rung (ties: the
lower trial number; a diverged value never ranks); else a new trial starts (trials.py).
Every decision reads only sweep_rungs and the trials' rows, under the sweep's lock."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import job_submission, jobs
from core.config import Settings
from core.metrics import finite
from core.states import JobStatus
from core.tables import Job, Sweep, SweepRung, utcnow


def rung_epochs(asha: dict) -> list[int]:
    epochs, at = [], asha["min_epochs"]
    while at < asha["max_epochs"]:
        epochs.append(at)
        at *= asha["reduction_factor"]
    return [*epochs, asha["max_epochs"]]


def pause_epoch(rungs: list[int], rung: int) -> int | None:
    """Where a trial starting toward `rung` pauses: that rung's epoch; None for the last
    (it trains to the end)."""
    return rungs[rung] if rung < len(rungs) - 1 else None


def first_pause(sweep: Sweep) -> int | None:
    return pause_epoch(rung_epochs(sweep.spec["asha"]), 0)


def record_rungs(session: Session, sweep: Sweep) -> None:
    """A row for each trial paused at a rung or finished at the last, not yet recorded: its
    metric there (the last epoch's, which a paused trial's row holds until it resumes).
    Commits."""
    rungs = rung_epochs(sweep.spec["asha"])
    seen = {(trial, rung) for trial, rung in session.execute(
        select(SweepRung.trial, SweepRung.rung).where(SweepRung.sweep_id == sweep.id))}
    reached = session.execute(select(Job.id, Job.trial, Job.status, Job.pause_at_epoch,
                                     Job.final_metrics).where(
        Job.sweep_id == sweep.id,
        Job.status.in_([JobStatus.paused.value, JobStatus.succeeded.value]))).all()
    for job in reached:
        rung = (len(rungs) - 1 if job.status == JobStatus.succeeded.value
                else rungs.index(job.pause_at_epoch))
        if (job.trial, rung) not in seen:
            session.add(SweepRung(sweep_id=sweep.id, trial=job.trial, rung=rung,
                                  epoch=rungs[rung], job_id=job.id,
                                  value=finite((job.final_metrics or {}).get(sweep.metric))))
    session.commit()


def ranked(rows: list[SweepRung], mode: str) -> list[SweepRung]:
    """A rung's rows best first (ties: the lower trial number); diverged ones left out."""
    return sorted((r for r in rows if r.value is not None),
                  key=lambda r: (-r.value if mode == "max" else r.value, r.trial))


def promotable(session: Session, sweep: Sweep) -> SweepRung | None:
    """The rung row of the trial to promote now, or None."""
    rungs = rung_epochs(sweep.spec["asha"])
    eta = sweep.spec["asha"]["reduction_factor"]
    rows = session.scalars(select(SweepRung).where(SweepRung.sweep_id == sweep.id)).all()
    paused = {trial: epoch for trial, epoch in session.execute(
        select(Job.trial, Job.pause_at_epoch).where(
            Job.sweep_id == sweep.id, Job.status == JobStatus.paused.value))}
    for rung in reversed(range(len(rungs) - 1)):
        at_rung = [r for r in rows if r.rung == rung]
        for row in ranked(at_rung, sweep.mode)[:len(at_rung) // eta]:
            if row.promoted_at is None and paused.get(row.trial) == rungs[rung]:
                return row
    return None


def promote(session: Session, sweep: Sweep, row: SweepRung, settings: Settings) -> str:
    """The paused trial goes on to the next rung: back to the queue, to resume from its
    checkpoint. Committed before it is sent (a reaper re-sends a message lost between)."""
    rungs = rung_epochs(sweep.spec["asha"])
    row.promoted_at = utcnow()
    job = jobs.transition(session, row.job_id, JobStatus.queued,
                          from_states=frozenset({JobStatus.paused}),
                          pause_at_epoch=pause_epoch(rungs, row.rung + 1), enqueued_at=None)
    session.commit()
    job_submission.enqueue_job(session, job, settings)
    return job.id


def stop_paused(session: Session, sweep_id: str) -> None:
    """At the sweep's end: the trials it never promoted end `stopped`."""
    for job_id in session.scalars(select(Job.id).where(
            Job.sweep_id == sweep_id, Job.status == JobStatus.paused.value)).all():
        jobs.transition(session, job_id, JobStatus.stopped,
                        from_states=frozenset({JobStatus.paused}))
    session.commit()


def rung_table(session: Session, sweep: Sweep) -> list[dict]:
    """Each rung: its epoch, the trials that reached it (best first, then the diverged), the
    cutoff (the worst value among the best ⌊n/η⌋; None while none qualifies), and which were
    promoted. Empty for a sweep that is not asha."""
    if not sweep.spec.get("asha"):
        return []
    rungs = rung_epochs(sweep.spec["asha"])
    eta = sweep.spec["asha"]["reduction_factor"]
    rows = session.scalars(select(SweepRung).where(SweepRung.sweep_id == sweep.id)).all()
    table = []
    for rung, epoch in enumerate(rungs):
        at_rung = [r for r in rows if r.rung == rung]
        best = ranked(at_rung, sweep.mode)
        top = best[:len(at_rung) // eta] if rung < len(rungs) - 1 else []
        table.append({"rung": rung, "epoch": epoch, "reached": len(at_rung),
                      "cutoff": top[-1].value if top else None,
                      "trials": [{"trial": r.trial, "job_id": r.job_id, "value": r.value,
                                  "promoted": r.promoted_at is not None}
                                 for r in [*best, *(r for r in at_rung if r.value is None)]]})
    return table


def any_ranked(session: Session, sweep_id: str) -> bool:
    return session.scalar(select(SweepRung.trial).where(
        SweepRung.sweep_id == sweep_id, SweepRung.value.is_not(None)).limit(1)) is not None


def best_of_rungs(table: list[dict]) -> dict | None:
    """The best trial at the highest rung any trial reached with a value (ties: the lower
    trial number), as rung_table lists it; None before any."""
    for rung in reversed(table):
        ranked_here = [t for t in rung["trials"] if t["value"] is not None]
        if ranked_here:
            return {**ranked_here[0], "epoch": rung["epoch"]}
    return None
