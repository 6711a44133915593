"""Jobs: submit, list, read, cancel, delete. HTTP adapters over core.job_submission and
core.job_deletion."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlalchemy import select

from api.auth import TenantDep
from api.deps import IdPrefixDep, JobDep, SessionDep, load_job
from api.errors import responses
from api.paging import newest_first
from api.quota_checks import rate_limited, tenant_turn
from api.reads import run_read
from api.schemas import JobList, JobPublic
from core import job_submission, jobs, workers
from core.config import get_settings
from core.job_deletion import delete_job as delete_finished_job
from core.jobspec import JobSpec
from core.states import JobStatus
from core.tables import Job, Sweep
from core.tenancy import Tenant, get_owned, visible
from core.text import storable_problem

router = APIRouter(prefix="/jobs", tags=["jobs"])


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=200,
    description="makes the submission safe to retry: a second POST with the same key and "
                "the same body answers 200 with the job the first one created; with "
                "another body, 409")]


def _check_key(key: str | None) -> None:
    problem = storable_problem(key) if key is not None else None
    if problem:  # HTTP/1.1 itself keeps NUL out of headers; other transports may not
        raise RequestValidationError([{"loc": ("header", "Idempotency-Key"),
                                       "type": "string_not_storable", "msg": problem}])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic,
             responses={200: {"model": JobPublic,
                              "description": "an earlier submission with this Idempotency-Key "
                                             "and the same body: its job"},
                        **responses(409, 422, 429, 503)},
             dependencies=[rate_limited("jobs")])
async def create_job(spec: JobSpec, session: SessionDep, response: Response, tenant: TenantDep,
                     idempotency_key: IdempotencyKey = None) -> JobPublic:
    # Three steps in threads, the session's connection handed back between them: the
    # slow work first (the dataset, init_from's checkpoint), then the tenant's turn at its
    # caps (the count and the insert, nothing else), then the broker.
    _check_key(idempotency_key)
    settings = get_settings()
    step = await run_in_threadpool(job_submission.prepare, session, spec, tenant,
                                   idempotency_key)
    if isinstance(step, job_submission.Prepared):
        async with tenant_turn(tenant):
            step = await run_in_threadpool(job_submission.insert, session, step, tenant,
                                           idempotency_key, settings)
    consumed = None
    if step.replayed:
        response.status_code = status.HTTP_200_OK
    else:
        consumed = await run_in_threadpool(job_submission.enqueue_job, session, step.job,
                                           settings)
    response.headers["Location"] = f"/jobs/{step.job.id}"
    return JobPublic.from_row(step.job, consumed)


@router.get("", response_model=JobList, responses=responses(404, 422))
def list_jobs(session: SessionDep, tenant: TenantDep,
              status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              cursor: str | None = None, id_prefix: IdPrefixDep = None,
              sweep: Annotated[str | None, Query(
                  max_length=64, description="only this sweep's trials")] = None) -> JobList:
    """The caller's jobs (an admin's: everyone's), newest first; pass next_cursor back as
    cursor for the next page."""
    query = visible(select(Job), Job, tenant)
    if sweep is not None:  # another tenant's sweep is a 404, as a missing one
        query = query.where(Job.sweep_id == get_owned(session, Sweep, sweep, tenant).id)
    if status_filter is not None:
        query = query.where(Job.status == status_filter.value)
    if id_prefix is not None:
        query = query.where(Job.id.startswith(id_prefix))
    page, next_cursor = newest_first(session, query, Job, cursor, limit)
    consumed = workers.live_queues(session)
    return JobList(jobs=[JobPublic.from_row(j, consumed) for j in page],
                   next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic, responses=responses(404))
async def read_job(job_id: str, tenant: TenantDep, request: Request) -> Response:
    return Response(await run_read(request, job_json, job_id, tenant),
                    media_type="application/json")


def job_json(session, job_id: str, tenant: Tenant) -> str:
    """The caller's job as JSON. Only a queued job can be waiting: the live workers are looked
    up for it alone. The model is written to JSON once (returning it from the route would
    validate it again, then encode it)."""
    job = load_job(session, job_id, tenant)
    consumed = workers.live_queues(session) if job.status == JobStatus.queued.value else None
    return JobPublic.from_row(job, consumed).model_dump_json()


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
    delete_finished_job(session, job, get_settings())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
