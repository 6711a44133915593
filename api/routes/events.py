"""GET /jobs/{id}/events: the job as Server-Sent Events (history, live, then `end`)."""
from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from api.auth import TenantDep
from api.deps import load_job
from api.errors import responses
from api.live import EventStream, redis_client_factory
from core.config import get_settings
from core.db import session_scope

router = APIRouter(prefix="/jobs", tags=["events"])


@lru_cache
def live_redis():
    url = get_settings().redis_url
    return redis_client_factory(url)() if url else None


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`id:` and `data:` (one JSON object with a "
                                            "`type`: status, metric, progress, end) per event"},
                       **responses(404)})
def stream_events(job_id: str, tenant: TenantDep,
                  last_event_id: Annotated[str | None, Header(max_length=64)] = None
                  ) -> StreamingResponse:
    """First the job (a `status` event) and its points so far, then live points, progress
    and status changes, then an `end` event, after which the stream closes. Send the last
    id you received as `Last-Event-ID` to resume with no point repeated or missed."""
    # Its own short session, not the request's: a stream lasts as long as the job, and must
    # not hold a pooled database connection all that time.
    with session_scope() as session:
        job = load_job(session, job_id, tenant)
    stream = EventStream(job.id, last_event_id, live_redis())
    return StreamingResponse(stream.events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})
