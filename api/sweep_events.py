"""A sweep's Server-Sent Events, derived from its rows: each trial's created, started and
finished (or stopped) events once each, asha's rung reached and promoted once per rung, a
`sweep` event whenever its status or counts change, then `end`. Read from the database (about once a second) rather than a Redis stream: the trials'
rows are the record, so a stream opened late or after a crash tells the same story."""
from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from api.sweep_schemas import SweepPublic
from core.db import session_scope
from core.states import JobStatus
from core.sweeps.summary import summarize, trial_value
from core.tables import Job, Sweep, SweepRung

POLL_S = 1.0
KEEPALIVE_S = 15.0


def _snapshot(sweep_id: str) -> tuple[dict | None, list[dict]]:
    """The sweep as SweepPublic's JSON, and its trials' events so far in time order."""
    with session_scope() as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            return None, []
        summary = summarize(session, [sweep])[sweep_id]
        state = json.loads(SweepPublic.from_row(sweep, summary).model_dump_json())
        trials = session.scalars(select(Job).where(Job.sweep_id == sweep_id)).all()
        happened = []
        for job in trials:
            base = {"trial": job.trial, "job_id": job.id}
            happened.append((job.created_at, {"type": "trial_created", **base,
                                              "values": job.trial_values or {}}))
            if job.started_at is not None:
                happened.append((job.started_at, {"type": "trial_started", **base}))
            if job.status == JobStatus.stopped.value:
                happened.append((job.finished_at or job.updated_at,
                                 {"type": "stopped", **base}))
            elif JobStatus(job.status).is_terminal:
                happened.append((job.finished_at or job.updated_at, {
                    "type": "trial_finished", **base, "status": job.status,
                    "value": trial_value(sweep, job)}))
        for row in session.scalars(select(SweepRung).where(SweepRung.sweep_id == sweep_id)):
            base = {"trial": row.trial, "job_id": row.job_id, "rung": row.rung}
            happened.append((row.reached_at, {"type": "rung_reached", **base,
                                              "epoch": row.epoch, "value": row.value}))
            if row.promoted_at is not None:
                happened.append((row.promoted_at, {"type": "promoted", **base}))
        happened.sort(key=lambda item: (item[0], item[1]["trial"]))
        return state, [{**event, "time": when.isoformat()} for when, event in happened]


def _key(event: dict) -> tuple:
    """What makes an event once: its type, its trial, and its rung (asha's events)."""
    return event["type"], event["trial"], event.get("rung")


def _frame(event: dict) -> str:
    return f"data: {json.dumps(event)}\n\n"


async def sweep_events(sweep_id: str) -> AsyncIterator[str]:
    sent: set[tuple] = set()
    last_state = None
    idle = 0.0
    while True:
        state, happened = await run_in_threadpool(_snapshot, sweep_id)
        if state is None:  # deleted meanwhile
            yield _frame({"type": "end", "status": "deleted"})
            return
        out = [e for e in happened if _key(e) not in sent]
        sent.update(_key(e) for e in out)
        changed = {k: state[k] for k in ("status", "trials", "best", "waiting",
                                         "epochs_spent")}
        if changed != last_state:
            out.insert(0, {"type": "sweep", **state})
            last_state = changed
        for event in out:
            yield _frame(event)
        if out:
            idle = 0.0
        ended = state["status"] != "running" and not (
            state["trials"]["queued"] or state["trials"]["running"])
        if ended:
            yield _frame({"type": "end", "status": state["status"]})
            return
        idle += POLL_S
        if idle >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            idle = 0.0
        await asyncio.sleep(POLL_S)
