"""A sweep's Server-Sent Events (core.sweeps.history's story): each trial's and rung's
event once, a `sweep` event whenever its status or counts change, then `end`. Read from the
database about once a second rather than from a Redis stream: the rows are the record, so a
stream opened late or after a crash tells the same story."""
from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

from fastapi.concurrency import run_in_threadpool

from api.sweep_schemas import SweepPublic
from core.db import session_scope
from core.states import SweepStatus
from core.sweeps.history import snapshot
from core.sweeps.trials import UNFINISHED

POLL_S = 1.0
KEEPALIVE_S = 15.0


def _snapshot(sweep_id: str) -> tuple[dict | None, list[dict]]:
    """The sweep as SweepPublic's JSON, and its events so far in time order."""
    with session_scope() as session:
        story = snapshot(session, sweep_id)
        if story is None:
            return None, []
        sweep, summary, happened = story
        return json.loads(SweepPublic.from_row(sweep, summary).model_dump_json()), happened


def _key(event: dict) -> tuple:
    """What makes an event once: its type, its trial, and its rung (asha's events)."""
    return event["type"], event["trial"], event.get("rung")


def _ended(state: dict) -> bool:
    """The sweep and every trial of it have ended (core.states' terminal states: a trial
    still paused, say of a sweep just cancelled, has not)."""
    return SweepStatus(state["status"]).is_terminal and not any(
        state["trials"].get(status) for status in UNFINISHED)


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
        if _ended(state):
            yield _frame({"type": "end", "status": state["status"]})
            return
        idle += POLL_S
        if idle >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            idle = 0.0
        await asyncio.sleep(POLL_S)
