"""Rate limits as route dependencies (`dependencies=[rate_limited("jobs")]`), and each
tenant's turn at its caps within this process (`async with tenant_turn(tenant)`)."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import Depends
from fastapi.concurrency import run_in_threadpool

from api.auth import TenantDep
from core import quota_ledger
from core.config import get_settings
from core.db import session_scope
from core.tenancy import Tenant


def _limit(kind: str) -> quota_ledger.RateLimit:
    settings = get_settings()
    return {
        "jobs": quota_ledger.RateLimit("POST /jobs", settings.rate_limit_jobs_per_minute,
                                 "TRAINHUB_RATE_LIMIT_JOBS_PER_MINUTE"),
        "datasets": quota_ledger.RateLimit("POST /datasets", settings.rate_limit_datasets_per_minute,
                                     "TRAINHUB_RATE_LIMIT_DATASETS_PER_MINUTE"),
        "predict": quota_ledger.RateLimit("POST /predict", settings.rate_limit_predict_per_minute,
                                    "TRAINHUB_RATE_LIMIT_PREDICT_PER_MINUTE"),
    }[kind]


def _hit(tenant: Tenant, limit: quota_ledger.RateLimit) -> None:
    with session_scope() as session:
        quota_ledger.hit(session, tenant, limit)


def rate_limited(kind: str):
    """A dependency that counts the request against the caller's key (429 past the limit)."""
    _limit(kind)  # an unknown kind fails at import, not at the first request

    async def check(tenant: TenantDep) -> None:
        limit = _limit(kind)
        if tenant.is_admin or limit.per_minute <= 0:
            return  # without a trip to a thread
        await run_in_threadpool(_hit, tenant, limit)

    return Depends(check)


# One asyncio lock per tenant with requests in this process, dropped with its last waiter.
_turns: dict[str, tuple[asyncio.Lock, int]] = {}


@asynccontextmanager
async def tenant_turn(tenant: Tenant) -> AsyncIterator[None]:
    """The tenant's turn to check its caps and create, among this process's requests.

    The check-then-create itself is serialised by the tenant's database lock
    (core.quota_ledger.lock_tenant), which a request waits for holding a pooled connection (and
    a thread): 200 submissions of one tenant at once would hold every connection waiting
    for it, and the pool ran dry. Queued here first, the waiters hold neither: at most one
    request per tenant and process waits for the database lock (the others, of other API
    processes). A tenant without caps (an admin) takes no turn."""
    if tenant.is_admin or tenant.user_id is None:
        yield
        return
    key = tenant.user_id
    lock, waiting = _turns.get(key) or (asyncio.Lock(), 0)
    _turns[key] = (lock, waiting + 1)
    try:
        async with lock:
            yield
    finally:
        lock, waiting = _turns[key]
        if waiting == 1:
            del _turns[key]
        else:
            _turns[key] = (lock, waiting - 1)
