"""Jobs: submit, list, read, cancel."""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from api.auth import TenantDep
from api.deps import IdPrefixDep, JobDep, SessionDep, load_job
from api.errors import responses
from api.quota_checks import rate_limited, tenant_turn
from api.reads import run_read
from api.schemas import JobList, JobPublic
from core import checkpoint_format as ckpt
from core import datasets, events, jobs, quota_ledger, workers
from core.artifacts import get_store, job_prefix
from core.config import get_settings
from core.epochs import steps_per_epoch
from core.errors import Conflict
from core.ids import is_id
from core.init_from import load_init_from
from core.jobspec import JobSpec
from core.queue import RUN_JOB_TASK, BrokerUnavailable, enqueue
from core.routing import job_queue
from core.states import JobStatus
from core.tables import Job
from core.tenancy import Tenant, visible
from core.tensorboard_runs import remove_job_runs
from core.text import echo, storable_problem

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"])


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=200,
    description="makes the submission safe to retry: a second POST with the same key and "
                "the same body answers 200 with the job the first one created; with "
                "another body, 409")]


def request_hash(resolved: dict) -> str:
    """sha256 (hex) of the canonical JSON of a validated spec with its defaults filled in:
    two bodies that mean the same job hash alike."""
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(job: Job, digest: str, key: str, response: Response) -> JobPublic:
    """The job an earlier submission with this key created (200), or 409 for another body."""
    if job.request_hash != digest:
        raise Conflict(f"Idempotency-Key {echo(key)} was already used, with another request "
                       f"body, for job {job.id}; use a new key for a different job")
    response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobPublic.from_row(job)


def _check_key(key: str | None) -> None:
    problem = storable_problem(key) if key is not None else None
    if problem:  # HTTP/1.1 itself keeps NUL out of headers; other transports may not
        raise RequestValidationError([{"loc": ("header", "Idempotency-Key"),
                                       "type": "string_not_storable", "msg": problem}])


def _by_key(session, key: str, tenant: Tenant) -> Job | None:
    """The tenant's own job submitted with this key (keys are per owner)."""
    owner = Job.owner.is_(None) if tenant.user_id is None else Job.owner == tenant.user_id
    return session.scalars(select(Job).where(Job.idempotency_key == key, owner)).first()


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
    prepared = await run_in_threadpool(_prepare, session, spec, tenant, idempotency_key,
                                       response)
    if isinstance(prepared, JobPublic):
        return prepared
    async with tenant_turn(tenant):
        job = await run_in_threadpool(_insert, session, prepared, tenant, idempotency_key,
                                      response)
    if isinstance(job, JobPublic):
        return job
    consumed = await run_in_threadpool(_enqueue, session, job)
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobPublic.from_row(job, consumed)


@dataclass(frozen=True)
class _Submission:
    resolved: dict
    total_steps: int
    digest: str


def _prepare(session, spec: JobSpec, tenant: Tenant, idempotency_key: str | None,
             response: Response) -> _Submission | JobPublic:
    """The job to create, checked against everything but the caps; or an earlier
    submission's job (a replay)."""
    digest = request_hash(spec.resolved())
    if idempotency_key is not None:
        earlier = _by_key(session, idempotency_key, tenant)
        if earlier is not None:
            return _replay(earlier, digest, idempotency_key, response)
    view = datasets.resolve(session, spec.dataset, tenant)
    if spec.init_from is not None:
        target = ckpt.architecture(spec.model, view.shape, len(view.classes))
        load_init_from(session, get_store(), spec.init_from.model_dump(), target, tenant)
    resolved = spec.resolved()
    if spec.name is None and not view.builtin:
        resolved["name"] = f"{spec.model}-{view.name}"
    hp = spec.hyperparameters
    total_steps = hp.epochs * steps_per_epoch(view.train_size, hp.batch_size,
                                                       hp.validation_fraction)
    session.rollback()  # read only: its connection goes back while the request waits its turn
    return _Submission(resolved, total_steps, digest)


def _insert(session, submission: _Submission, tenant: Tenant, idempotency_key: str | None,
            response: Response) -> Job | JobPublic:
    """Count and insert under the tenant's database lock, held until the commit: another
    API process cannot pass the same cap meanwhile. Committed before the job is enqueued: a
    fast worker must find the row (Celery's "database transactions" race)."""
    settings = get_settings()
    quota_ledger.lock_tenant(session, tenant)
    quota_ledger.check_job_caps(session, tenant, settings.tenant_max_active_jobs,
                          settings.tenant_max_stored_bytes)
    job = jobs.create_job(session, submission.resolved, max_attempts=settings.max_attempts)
    job.owner = tenant.user_id
    job.total_steps = submission.total_steps
    job.idempotency_key, job.request_hash = idempotency_key, submission.digest
    try:
        session.commit()
    except IntegrityError:
        # A concurrent request with the same key committed first (the key's unique index):
        # its job is the one to answer with; this request adds nothing.
        session.rollback()
        if idempotency_key is None:
            raise
        earlier = _by_key(session, idempotency_key, tenant)
        if earlier is None:  # that request failed to enqueue, releasing the key meanwhile
            raise Conflict(f"a concurrent request with Idempotency-Key {echo(idempotency_key)} "
                           "did not complete; retry") from None
        return _replay(earlier, submission.digest, idempotency_key, response)
    return job


def _enqueue(session, job: Job) -> set[str]:
    """Hand the committed job to the broker; the queues some worker consumes."""
    settings = get_settings()
    try:
        enqueue(RUN_JOB_TASK, job.id, queue=job_queue(settings.queue, job.spec))
    except BrokerUnavailable as exc:
        log.error("job %s: broker unavailable: %s", job.id, exc)
        # The key is released with it: retrying the request makes a new job.
        jobs.transition(session, job.id, JobStatus.failed,
                        error="could not enqueue: the broker was unreachable",
                        idempotency_key=None)
        session.commit()
        raise BrokerUnavailable(f"broker unavailable; job {job.id} was not queued") from exc
    jobs.mark_enqueued(session, job.id)  # unmarked jobs are re-sent by a worker's reaper
    session.commit()
    return live_queues(session)


def live_queues(session) -> set[str]:
    """The queues some running worker consumes (a job in another one waits, and says so)."""
    return workers.live_queues(session)


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        if not is_id(job_id):  # nothing but an id goes into the query (no NUL, no junk)
            raise ValueError(job_id)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.astimezone(timezone.utc), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise RequestValidationError([{"loc": ("query", "cursor"), "type": "value_error",
                                       "msg": "cursor is not one this API returned"}]) from None


@router.get("", response_model=JobList, responses=responses(422))
def list_jobs(session: SessionDep, tenant: TenantDep,
              status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              cursor: str | None = None, id_prefix: IdPrefixDep = None) -> JobList:
    """The caller's jobs (an admin's: everyone's), newest first; pass next_cursor back as
    cursor for the next page."""
    query = visible(select(Job), Job, tenant)
    if status_filter is not None:
        query = query.where(Job.status == status_filter.value)
    if id_prefix is not None:
        query = query.where(Job.id.startswith(id_prefix))
    if cursor:
        created, job_id = _decode_cursor(cursor)
        query = query.where(or_(Job.created_at < created,
                                and_(Job.created_at == created, Job.id < job_id)))
    rows = session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc())
                           .limit(limit + 1)).all()
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1]) if len(rows) > limit else None
    consumed = live_queues(session)
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
    consumed = live_queues(session) if job.status == JobStatus.queued.value else None
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
    if not JobStatus(job.status).is_terminal:
        raise Conflict(f"job is {job.status}; cancel it and wait for it to end first")
    job_id = job.id
    session.delete(job)  # metric points and checkpoint rows go by ON DELETE CASCADE
    session.commit()
    get_store().delete_prefix(job_prefix(job_id))
    drop_event_stream(job_id)
    drop_tensorboard_runs(job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def drop_tensorboard_runs(job_id: str) -> None:
    """The job's TensorBoard run, where this API shares the worker's data dir; workers on
    disks of their own remove theirs in the reaper's pass (worker.reaper)."""
    try:
        remove_job_runs(get_settings().tensorboard_dir, job_id)
    except OSError as exc:  # the workers' pass removes it later
        log.warning("job %s: could not delete its TensorBoard run: %s", job_id, exc)


def drop_event_stream(job_id: str) -> None:
    url = get_settings().redis_url
    if not url:
        return
    try:
        events.connect(url).delete(events.stream_key(job_id))
    except Exception as exc:  # it expires on its own within a day
        log.warning("job %s: could not delete its event stream: %s", job_id, exc)
