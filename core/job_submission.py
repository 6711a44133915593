"""Submitting a job: an Idempotency-Key's replay, the program, dataset and init_from checks,
the tenant's caps, the insert and the enqueue. Plain functions of a session, no HTTP.

POST /jobs runs them as three steps (prepare, insert, enqueue_job), waiting for the tenant's
turn between the first two with no connection held; submit() runs the same steps in one go,
for a caller outside a request.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import checkpoint_format as ckpt
from core import datasets, jobs, programs, quota_ledger, workers
from core.artifacts import get_store
from core.config import Settings, get_settings
from core.epochs import steps_per_epoch
from core.errors import Conflict
from core.ids import is_id
from core.init_from import load_init_from
from core.jobspec import JobSpec, check_parameter_cap
from core.queue import RUN_JOB_TASK, enqueue_or_fail
from core.routing import job_queue
from core.states import JobStatus
from core.tables import Job
from core.tenancy import Tenant
from core.text import echo


@dataclass(frozen=True)
class Prepared:
    """A job checked against everything but the caps, ready to insert."""

    resolved: dict  # the spec with its defaults (and a derived name) filled in
    total_steps: int
    digest: str  # request_hash of the spec


@dataclass(frozen=True)
class Submitted:
    job: Job
    # An earlier submission with the same key and body: its job, nothing new was made.
    replayed: bool = False


def request_hash(resolved: dict) -> str:
    """sha256 (hex) of the canonical JSON of a validated spec with its defaults filled in:
    two bodies that mean the same job hash alike."""
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def by_key(session: Session, key: str, tenant: Tenant) -> Job | None:
    """The tenant's own job submitted with this key (keys are per owner)."""
    owner = Job.owner.is_(None) if tenant.user_id is None else Job.owner == tenant.user_id
    return session.scalars(select(Job).where(Job.idempotency_key == key, owner)).first()


def replay(job: Job, digest: str, key: str) -> Submitted:
    """The job an earlier submission with this key created; Conflict for another body."""
    if job.request_hash != digest:
        raise Conflict(f"Idempotency-Key {echo(key)} was already used, with another request "
                       f"body, for job {job.id}; use a new key for a different job")
    return Submitted(job, replayed=True)


def prepare(session: Session, spec: JobSpec, tenant: Tenant,
            idempotency_key: str | None) -> Prepared | Submitted:
    """The job to create, checked against everything but the caps; or an earlier
    submission's job (a replay). Reads only: the session's connection goes back at the end."""
    digest = request_hash(spec.resolved())
    if idempotency_key is not None:
        earlier = by_key(session, idempotency_key, tenant)
        if earlier is not None:
            return replay(earlier, digest, idempotency_key)
    # A program (a model named by its id) is looked up first: another tenant's is answered
    # as an unknown model, whatever the dataset.
    program = programs.program_for_job(session, spec.model, tenant) if is_id(spec.model) else None
    view = datasets.resolve(session, spec.dataset, tenant)
    if program is not None:
        programs.check_fits(program, len(view.classes), view.name,
                            get_settings().max_model_parameters, view.shape)
    else:
        check_parameter_cap(spec.model, len(view.classes))  # exact now the classes are known
    if spec.init_from is not None:
        target = ckpt.architecture(spec.model, view.shape, len(view.classes))
        load_init_from(session, get_store(), spec.init_from.model_dump(), target, tenant)
    resolved = spec.resolved()
    if spec.name is None and (program is not None or not view.builtin):
        resolved["name"] = f"{program.name if program else spec.model}-{view.name}"
    hp = spec.hyperparameters
    total_steps = hp.epochs * steps_per_epoch(view.train_size, hp.batch_size,
                                              hp.validation_fraction)
    session.rollback()  # its connection goes back while the caller waits for its turn
    return Prepared(resolved, total_steps, digest)


def insert(session: Session, prepared: Prepared, tenant: Tenant, idempotency_key: str | None,
           settings: Settings, columns: dict | None = None) -> Submitted:
    """Count and insert under the tenant's database lock, held until the commit: another
    API process cannot pass the same cap meanwhile. Committed before the job is enqueued: a
    fast worker must find the row (Celery's "database transactions" race). `columns` are
    more of the row's values (a sweep's trial: its sweep, number and values)."""
    quota_ledger.lock_tenant(session, tenant)
    quota_ledger.check_job_caps(session, tenant, settings.tenant_max_active_jobs,
                                settings.tenant_max_stored_bytes)
    job = jobs.create_job(session, prepared.resolved, max_attempts=settings.max_attempts)
    job.owner = tenant.user_id
    job.total_steps = prepared.total_steps
    job.idempotency_key, job.request_hash = idempotency_key, prepared.digest
    for column, value in (columns or {}).items():
        setattr(job, column, value)
    try:
        session.commit()
    except IntegrityError:
        # A concurrent request with the same key committed first (the key's unique index):
        # its job is the one to answer with; this request adds nothing.
        session.rollback()
        if idempotency_key is None:
            raise
        earlier = by_key(session, idempotency_key, tenant)
        if earlier is None:  # that request failed to enqueue, releasing the key meanwhile
            raise Conflict(f"a concurrent request with Idempotency-Key {echo(idempotency_key)} "
                           "did not complete; retry") from None
        return replay(earlier, prepared.digest, idempotency_key)
    return Submitted(job)


def enqueue_job(session: Session, job: Job, settings: Settings) -> set[str]:
    """Hand the committed job to the broker; the queues some running worker consumes (a job
    in another one waits, and says so). A broker that is down fails the job, releasing its
    key: retrying the request makes a new job."""
    enqueue_or_fail(session, RUN_JOB_TASK, job.id, noun="job",
                    queue=job_queue(settings.queue, job.spec),
                    mark_failed=lambda reason: jobs.transition(
                        session, job.id, JobStatus.failed, error=reason,
                        idempotency_key=None))
    jobs.mark_enqueued(session, job.id)  # unmarked jobs are re-sent by a worker's reaper
    session.commit()
    return workers.live_queues(session)


def submit(session: Session, spec: JobSpec, tenant: Tenant, settings: Settings,
           idempotency_key: str | None = None, columns: dict | None = None) -> Submitted:
    """The whole submission in one go (prepare, insert, enqueue_job), for a caller outside
    a request: it takes no per-process turn at the tenant's caps (the database lock still
    holds them)."""
    step = prepare(session, spec, tenant, idempotency_key)
    if isinstance(step, Prepared):
        step = insert(session, step, tenant, idempotency_key, settings, columns)
    if not step.replayed:
        enqueue_job(session, step.job, settings)
    return step
