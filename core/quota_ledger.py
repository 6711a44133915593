"""Per-key rate limits and per-tenant caps, counted in the database so that they hold
across every API process. Admins are exempt from both."""
from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.states import JobStatus
from core.tables import Checkpoint, Dataset, Job, Program, RateCount
from core.tenancy import Tenant

WINDOW_SECONDS = 60


class RateLimited(Exception):
    """Too many requests from one key; retry_after is in whole seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class CapReached(Exception):
    """A tenant is at a cap; `status` is 429 (it passes: wait) or 409 (it does not:
    delete something first)."""

    def __init__(self, message: str, status: int, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


@dataclass(frozen=True)
class RateLimit:
    action: str  # what is counted, e.g. "POST /jobs"
    per_minute: int  # 0: unlimited
    setting: str  # the environment variable that sets it


def hit(session: Session, tenant: Tenant, limit: RateLimit, now: float | None = None) -> None:
    """Count one request against the key's current window; RateLimited past the limit.
    Commits the count, so it holds even if the request fails later."""
    if tenant.is_admin or limit.per_minute <= 0 or tenant.key_id is None:
        return
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    insert = (postgresql.insert if session.bind.dialect.name == "postgresql"
              else sqlite.insert)(RateCount)
    count = session.execute(
        insert.values(key_id=tenant.key_id, action=limit.action, window=window, count=1)
        .on_conflict_do_update(index_elements=["key_id", "action", "window"],
                               set_={"count": RateCount.count + 1})
        .returning(RateCount.count)).scalar_one()
    if count == 1:  # a new window: the key's older ones are done with
        session.execute(delete(RateCount).where(RateCount.key_id == tenant.key_id,
                                                RateCount.window < window))
    session.commit()
    if count > limit.per_minute:
        retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        raise RateLimited(f"rate limit: at most {limit.per_minute} {limit.action} a minute "
                          f"per API key ({limit.setting}); retry in {retry_after} s",
                          retry_after)


def lock_tenant(session: Session, tenant: Tenant) -> None:
    """Serialise one tenant's check-then-create until the transaction ends, so two API
    processes cannot both pass a cap with one slot left (Postgres; SQLite has one writer).
    An admin has no caps: nothing to serialise."""
    if (session.bind.dialect.name == "postgresql" and tenant.user_id is not None
            and not tenant.is_admin):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                        {"k": zlib.crc32(f"tenant:{tenant.user_id}".encode())})


def _stored_bytes_parts(owner: str):
    """Bytes a tenant holds in the artifact store, as scalar subqueries: its datasets, its
    programs and its jobs' checkpoints."""
    return (select(func.coalesce(func.sum(Dataset.stored_bytes), 0))
            .where(Dataset.owner == owner).scalar_subquery(),
            select(func.coalesce(func.sum(Program.size_bytes), 0))
            .where(Program.owner == owner).scalar_subquery(),
            select(func.coalesce(func.sum(Checkpoint.size_bytes), 0))
            .join(Job, Checkpoint.job_id == Job.id).where(Job.owner == owner)
            .scalar_subquery())


def _active_jobs(owner: str):
    return (select(func.count()).select_from(Job)
            .where(Job.owner == owner,
                   Job.status.in_([JobStatus.queued.value, JobStatus.running.value]))
            .scalar_subquery())


def stored_bytes(session: Session, owner: str) -> int:
    """Bytes a tenant holds in the artifact store: its datasets, programs and jobs'
    checkpoints."""
    return sum(map(int, session.execute(select(*_stored_bytes_parts(owner))).one()))


def check_active_jobs(session: Session, tenant: Tenant, cap: int) -> None:
    if tenant.is_admin or cap <= 0:
        return
    _refuse_active(session.scalar(select(_active_jobs(tenant.user_id))), cap)


def check_stored_bytes(session: Session, tenant: Tenant, cap: int, adding: int = 0) -> None:
    if tenant.is_admin or cap <= 0:
        return
    _refuse_stored(stored_bytes(session, tenant.user_id), cap, adding)


def check_job_caps(session: Session, tenant: Tenant, max_active: int, max_stored: int) -> None:
    """Both caps a new job meets, read in one round trip (it runs under the tenant's lock:
    the shorter, the sooner the next submission of the tenant gets its turn)."""
    if tenant.is_admin or (max_active <= 0 and max_stored <= 0):
        return
    active, *stored = session.execute(
        select(_active_jobs(tenant.user_id), *_stored_bytes_parts(tenant.user_id))).one()
    if max_active > 0:
        _refuse_active(active, max_active)
    if max_stored > 0:
        _refuse_stored(sum(map(int, stored)), max_stored)


def _refuse_active(active: int, cap: int) -> None:
    if active >= cap:
        raise CapReached(f"cap reached: {active} queued or running jobs; at most {cap} per "
                         "tenant (TRAINHUB_TENANT_MAX_ACTIVE_JOBS); wait for one to end or "
                         "cancel one", 429, retry_after=30)


def _refuse_stored(used: int, cap: int, adding: int = 0) -> None:
    if used + adding > cap:
        more = f" and {adding} more bytes" if adding else ""
        raise CapReached(f"cap reached: this tenant stores {used} bytes{more}; at most {cap} "
                         "(TRAINHUB_TENANT_MAX_STORED_BYTES); delete jobs, datasets or models "
                         "first", 409)
