"""A job's own log lines, oldest first, paged by line id (follow: ask again with
since=next_since until the job has ended)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from api.deps import JobDep, SessionDep
from api.errors import responses
from core.tables import JobLog

router = APIRouter(prefix="/jobs", tags=["logs"])


class LogLine(BaseModel):
    id: int
    time: datetime
    level: str
    attempt: int
    source: str  # the logger that wrote it
    message: str


class LogPage(BaseModel):
    job_id: str
    status: str  # the job's, so a follower knows when to stop asking
    lines: list[LogLine]
    next_since: int  # pass back as since: the id of the last line (or since, if none)


@router.get("/{job_id}/logs", response_model=LogPage, responses=responses(404, 422))
def read_logs(job: JobDep, session: SessionDep,
              since: Annotated[int, Query(ge=0, le=2**62)] = 0,
              limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> LogPage:
    """Lines with id > since: claimed by which worker and device, the dataset, each epoch's
    summary, warnings, and the error with its cause."""
    rows = session.scalars(select(JobLog).where(JobLog.job_id == job.id, JobLog.id > since)
                           .order_by(JobLog.id).limit(limit)).all()
    lines = [LogLine(id=r.id, time=r.time, level=r.level, attempt=r.attempt, source=r.source,
                     message=r.message) for r in rows]
    return LogPage(job_id=job.id, status=job.status, lines=lines,
                   next_since=lines[-1].id if lines else since)
