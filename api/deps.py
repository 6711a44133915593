"""Request-scoped dependencies: a database session per request, and a job by path id."""
from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends
from sqlalchemy.orm import Session

from core.db import new_session
from core.errors import NotFound
from core.ids import is_id
from core.tables import Job


def get_session() -> Iterator[Session]:
    session = new_session()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def load_job(session: Session, job_id: str) -> Job:
    """The job with this id; NotFound (404) for a missing or malformed id."""
    job = session.get(Job, job_id) if is_id(job_id) else None
    if job is None:
        raise NotFound(f"job {job_id[:64]!r} not found")
    return job


def get_job(job_id: str, session: SessionDep) -> Job:
    return load_job(session, job_id)


JobDep = Annotated[Job, Depends(get_job)]
