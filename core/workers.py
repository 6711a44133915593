"""The workers table: a heartbeat row per running worker, and which ones are alive."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.config import get_settings
from core.tables import Worker, utcnow

# A worker is alive while its last heartbeat is younger than this many heartbeats
# (TRAINHUB_WORKER_HEARTBEAT_SECONDS): one late beat is not a lost worker.
LIVE_HEARTBEATS = 3


def liveness_window_seconds() -> float:
    return LIVE_HEARTBEATS * get_settings().worker_heartbeat_seconds


def beat(session: Session, name: str, **fields) -> None:
    """Insert or refresh the worker's row (last_seen now)."""
    row = session.get(Worker, name)
    if row is None:
        session.add(Worker(name=name, last_seen=utcnow(), started_at=utcnow(), **fields))
    else:
        for key, value in fields.items():
            setattr(row, key, value)
        row.last_seen = utcnow()


def leave(session: Session, name: str) -> None:
    session.execute(delete(Worker).where(Worker.name == name))


def live(session: Session, stale_after_seconds: float | None = None) -> list[Worker]:
    """Workers seen within stale_after_seconds (by default the liveness window), by name (a
    killed one drops off after it)."""
    if stale_after_seconds is None:
        stale_after_seconds = liveness_window_seconds()
    since = utcnow() - timedelta(seconds=stale_after_seconds)
    return list(session.scalars(select(Worker).where(Worker.last_seen >= since)
                                .order_by(Worker.name)))


def live_queues(session: Session, stale_after_seconds: float | None = None) -> set[str]:
    return {q for w in live(session, stale_after_seconds) for q in w.queues}
