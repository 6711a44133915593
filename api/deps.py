"""Request-scoped dependencies: a database session per request, a job by path id, loaded
for the caller (another tenant's job is a missing one), and the lists' query checks.

How a route reaches the database (one rule; docs/operations.md#how-a-route-reaches-the-database):

1. By default, and for every new route: a plain `def` route that takes `session: SessionDep`
   (or a dependency built on it, such as JobDep) and hands that session to core functions.
   FastAPI runs a `def` route in its threadpool; the connection goes back when it ends.
2. The hot reads only (the key lookup of every request in api.auth, GET /jobs/{id}, GET
   /jobs/{id}/metrics) are `async def` and pass a plain `fn(session, ...)` to
   api.reads.run_read, which runs it on the event loop with PostgreSQL. A route joins this
   list with a measurement (bench/run.py --only api_reads) and a line here.
3. An `async def` route that awaits something between its database steps (POST /jobs: the
   tenant's turn at its caps; POST /predict: its batch) takes SessionDep and runs each step
   with `await run_in_threadpool(step, session, ...)`.
4. What must not hold the request's session opens a short core.db.session_scope(): the
   event streams (they outlive the request), the rate limit's count (committed on its own,
   before the route runs) and GET /metrics' collector (prometheus_client calls it).
"""
from __future__ import annotations

import re
from typing import Annotated, AsyncIterator

import anyio.to_thread
from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from api import auth
from core.db import new_session
from core.tables import Job
from core.tenancy import Tenant, get_owned


async def get_session() -> AsyncIterator[Session]:
    # Opening a session touches no database (its connection is taken at its first query):
    # only the close, which hands the connection back, goes to a thread. Not the shared
    # threadpool's (as FastAPI exits a sync dependency): with every thread waiting for a
    # pooled connection, the close that frees one must not queue behind them.
    session = new_session()
    try:
        yield session
    finally:
        await anyio.to_thread.run_sync(session.close, limiter=anyio.CapacityLimiter(1))


SessionDep = Annotated[Session, Depends(get_session)]


def load_job(session: Session, job_id: str, tenant: Tenant) -> Job:
    """The caller's job with this id; NotFound (404) for a missing, malformed or foreign id."""
    return get_owned(session, Job, job_id, tenant)


async def get_job(job_id: str, session: SessionDep, request: Request) -> Job:
    return await run_in_threadpool(load_job, session, job_id, await auth.current_tenant(request))


JobDep = Annotated[Job, Depends(get_job)]


async def reject_unknown_query(request: Request) -> None:
    """A query parameter the route does not declare is a 422, as an unknown body field is:
    a misspelt `limt=5` must not be silently ignored (nor an object where a number goes)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    allowed = set(_query_names(dependant))
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        allowed_text = ", ".join(sorted(allowed)) or "none"
        raise RequestValidationError([
            {"loc": ("query", name[:64]), "type": "extra_forbidden",
             "msg": f"unknown query parameter; allowed here: {allowed_text}"}
            for name in unknown])


def _query_names(dependant):
    """The query parameters a route declares, its dependencies' included."""
    yield from (param.alias for param in dependant.query_params)
    for sub in dependant.dependencies:
        yield from _query_names(sub)


ID_PREFIX = re.compile(r"[0-9a-f]{1,32}")  # the start of an id (core.ids: 32 hex digits)


def id_prefix(id_prefix: Annotated[str | None, Query(
        description="only those whose id starts with these 1 to 32 hex digits (how the CLI "
                    "turns `trainhub show 8c7a` into one job)", examples=["8c7a"])] = None
              ) -> str | None:
    """The id_prefix filter, lowercased; a 422 naming it for anything but hex digits."""
    if id_prefix is None:
        return None
    prefix = id_prefix.lower()
    if ID_PREFIX.fullmatch(prefix) is None:
        raise RequestValidationError([{
            "loc": ("query", "id_prefix"), "type": "value_error",
            "msg": "expected 1 to 32 hex digits (0-9, a-f): the start of an id"}])
    return prefix


IdPrefixDep = Annotated[str | None, Depends(id_prefix)]
