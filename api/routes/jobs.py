"""Jobs: submit, list, read, cancel."""
from __future__ import annotations

import base64
import binascii
import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy import and_, or_, select

from api.deps import JobDep, SessionDep
from api.errors import responses
from api.schemas import JobList, JobPublic
from core import checkpoints as ckpt
from core import datasets, events, jobs
from core.artifacts import get_store, job_prefix
from core.config import get_settings
from core.errors import Conflict
from core.init_from import load_init_from
from core.jobspec import JobSpec
from core.queue import RUN_JOB_TASK, BrokerUnavailable, enqueue
from core.states import JobStatus
from core.tables import Job

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic,
             responses=responses(422, 503))
def create_job(spec: JobSpec, session: SessionDep, response: Response) -> JobPublic:
    view = datasets.resolve(session, spec.dataset)
    if spec.init_from is not None:
        target = ckpt.architecture(spec.model, view.shape, len(view.classes))
        load_init_from(session, get_store(), spec.init_from.model_dump(), target)
    resolved = spec.resolved()
    if spec.name is None and not view.builtin:
        resolved["name"] = f"{spec.model}-{view.name}"
    hp = spec.hyperparameters
    job = jobs.create_job(session, resolved, max_attempts=get_settings().max_attempts)
    job.total_steps = hp.epochs * datasets.steps_per_epoch(view.train_size, hp.batch_size,
                                                             hp.validation_fraction)
    # Commit before enqueueing: a fast worker must find the row (Celery's "database
    # transactions" race).
    session.commit()
    try:
        enqueue(RUN_JOB_TASK, job.id)
    except BrokerUnavailable as exc:
        log.error("job %s: broker unavailable: %s", job.id, exc)
        jobs.transition(session, job.id, JobStatus.failed,
                        error="could not enqueue: the broker was unreachable")
        session.commit()
        raise BrokerUnavailable(f"broker unavailable; job {job.id} was not queued") from exc
    jobs.mark_enqueued(session, job.id)  # unmarked jobs are re-sent by a worker's reaper
    session.commit()
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobPublic.from_row(job)


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        return datetime.fromisoformat(created), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise RequestValidationError([{"loc": ("query", "cursor"), "type": "value_error",
                                       "msg": "cursor is not one this API returned"}]) from None


@router.get("", response_model=JobList, responses=responses(422))
def list_jobs(session: SessionDep,
              status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              cursor: str | None = None) -> JobList:
    """Newest first; pass next_cursor back as cursor for the next page."""
    query = select(Job)
    if status_filter is not None:
        query = query.where(Job.status == status_filter.value)
    if cursor:
        created, job_id = _decode_cursor(cursor)
        query = query.where(or_(Job.created_at < created,
                                and_(Job.created_at == created, Job.id < job_id)))
    rows = session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc())
                           .limit(limit + 1)).all()
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1]) if len(rows) > limit else None
    return JobList(jobs=[JobPublic.from_row(j) for j in page], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic, responses=responses(404))
def read_job(job: JobDep) -> JobPublic:
    return JobPublic.from_row(job)


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic,
             responses=responses(404, 409))
def cancel_job(job: JobDep, session: SessionDep) -> JobPublic:
    """A queued job ends now; a running one stops at its loop's next check."""
    updated = jobs.request_cancel(session, job.id)
    session.commit()
    return JobPublic.from_row(updated)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=responses(404, 409))
def delete_job(job: JobDep, session: SessionDep) -> Response:
    """A finished job goes with its metrics, checkpoints and artifacts; 409 while it runs."""
    if not JobStatus(job.status).is_terminal:
        raise Conflict(f"job is {job.status}; cancel it and wait for it to end first")
    job_id = job.id
    session.delete(job)  # metric points and checkpoint rows go by ON DELETE CASCADE
    session.commit()
    get_store().delete_prefix(job_prefix(job_id))
    drop_event_stream(job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def drop_event_stream(job_id: str) -> None:
    url = get_settings().redis_url
    if not url:
        return
    try:
        events.connect(url).delete(events.stream_key(job_id))
    except Exception as exc:  # it expires on its own within a day
        log.warning("job %s: could not delete its event stream: %s", job_id, exc)
