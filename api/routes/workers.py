"""GET /workers: the running workers, what each consumes and has (a stopped one drops off)."""
from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep
from api.schemas import WorkerList, WorkerPublic
from core import workers

router = APIRouter(tags=["workers"])


@router.get("/workers", response_model=WorkerList)
def list_workers(session: SessionDep) -> WorkerList:
    """Workers seen in the last three heartbeats (TRAINHUB_WORKER_HEARTBEAT_SECONDS), by
    name; a worker deletes its row when it stops, a killed one drops off after that."""
    rows = workers.live(session)
    return WorkerList(workers=[WorkerPublic(
        name=w.name, hostname=w.hostname, pid=w.pid, queues=w.queues, devices=w.devices,
        memory_bytes=w.memory_bytes, concurrency=w.concurrency, started_at=w.started_at,
        last_seen=w.last_seen) for w in rows])
