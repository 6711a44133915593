"""Request-scoped dependencies: a database session per request, and a job by path id."""
from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, HTTPException
from sqlalchemy.orm import Session

from core.db import new_session
from core.jobs import is_valid_id
from core.tables import Job


def get_session() -> Iterator[Session]:
    session = new_session()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def get_job(job_id: str, session: SessionDep) -> Job:
    job = session.get(Job, job_id) if is_valid_id(job_id) else None
    if job is None:
        raise HTTPException(404, f"job {job_id!r} not found")
    return job


JobDep = Annotated[Job, Depends(get_job)]
