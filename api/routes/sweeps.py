"""Sweeps: submit, list, read, cancel, delete, and their event stream. HTTP adapters over
core.sweeps."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import TenantDep
from api.deps import IdPrefixDep, SessionDep
from api.errors import responses
from api.paging import newest_first
from api.quota_checks import rate_limited
from api.schemas import Page
from api.sweep_events import sweep_events
from api.sweep_schemas import SweepPublic
from core.config import get_settings
from core.db import session_scope
from core.states import SweepStatus
from core.sweeps.lifecycle import cancel_sweep as cancel_running_sweep
from core.sweeps.lifecycle import create_sweep as create_new_sweep
from core.sweeps.lifecycle import delete_sweep as delete_ended_sweep
from core.sweeps.spec import SweepSpec
from core.sweeps.summary import summarize
from core.tables import Sweep
from core.tenancy import Tenant, get_owned, visible

router = APIRouter(prefix="/sweeps", tags=["sweeps"])


def load_sweep(session: Session, sweep_id: str, tenant: Tenant) -> Sweep:
    """The caller's sweep; NotFound (404) for a missing, malformed or foreign id."""
    return get_owned(session, Sweep, sweep_id, tenant)


def get_sweep(sweep_id: str, session: SessionDep, tenant: TenantDep) -> Sweep:
    return load_sweep(session, sweep_id, tenant)


SweepDep = Annotated[Sweep, Depends(get_sweep)]


def public(session: Session, sweep: Sweep) -> SweepPublic:
    return SweepPublic.from_row(sweep, summarize(session, [sweep])[sweep.id])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SweepPublic,
             responses=responses(409, 422, 429, 503), dependencies=[rate_limited("jobs")])
def create_sweep(spec: SweepSpec, session: SessionDep, tenant: TenantDep,
                 response: Response) -> SweepPublic:
    """Check every trial the sweep would make (422 naming the field), store it, and start
    its first trials (jobs, up to max_concurrent). Its trials do not count against the rate
    limit; one refused by the tenant's caps waits (the sweep's `waiting` says why)."""
    sweep = create_new_sweep(session, spec, tenant, get_settings())
    response.headers["Location"] = f"/sweeps/{sweep.id}"
    return public(session, sweep)


@router.get("", response_model=Page[SweepPublic], responses=responses(422))
def list_sweeps(session: SessionDep, tenant: TenantDep,
                status_filter: Annotated[SweepStatus | None, Query(alias="status")] = None,
                limit: Annotated[int, Query(ge=1, le=200)] = 50,
                cursor: str | None = None,
                id_prefix: IdPrefixDep = None) -> Page[SweepPublic]:
    """The caller's sweeps (an admin's: everyone's), newest first; with id_prefix, only
    those whose id starts with it."""
    query = visible(select(Sweep), Sweep, tenant)
    if status_filter is not None:
        query = query.where(Sweep.status == status_filter.value)
    if id_prefix is not None:
        query = query.where(Sweep.id.startswith(id_prefix))
    page, next_cursor = newest_first(session, query, Sweep, cursor, limit)
    summaries = summarize(session, page)
    return Page[SweepPublic](items=[SweepPublic.from_row(s, summaries[s.id]) for s in page],
                             next_cursor=next_cursor)


@router.get("/{sweep_id}", response_model=SweepPublic, responses=responses(404))
def read_sweep(sweep: SweepDep, session: SessionDep) -> SweepPublic:
    return public(session, sweep)


@router.post("/{sweep_id}/cancel", status_code=status.HTTP_202_ACCEPTED,
             response_model=SweepPublic, responses=responses(404, 409))
def cancel_sweep(sweep: SweepDep, session: SessionDep) -> SweepPublic:
    """No new trial starts; queued trials end now, running ones at their loop's next check."""
    return public(session, cancel_running_sweep(session, sweep))


@router.delete("/{sweep_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=responses(404, 409))
def delete_sweep(sweep: SweepDep, session: SessionDep) -> Response:
    """An ended sweep with its trial jobs (their metrics, checkpoints, artifacts); 409 while
    it runs or a trial is still stopping."""
    delete_ended_sweep(session, sweep, get_settings())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{sweep_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`data:` (one JSON object with a `type`: sweep, "
                                            "trial_created, trial_started, trial_finished, "
                                            "end) per event"},
                       **responses(404)})
def stream_sweep_events(sweep_id: str, tenant: TenantDep) -> StreamingResponse:
    """The sweep's history so far (from the database), then its changes as they happen
    (read about once a second), then `end` when it has ended and every trial with it."""
    with session_scope() as session:  # a stream must not hold a pooled connection
        sweep = load_sweep(session, sweep_id, tenant)
    return StreamingResponse(sweep_events(sweep.id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
