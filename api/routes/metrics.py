"""Metric history of a job, in step order, paged by step: the HTTP side of
core.metrics.pages.step_page.

A page can hold 10,000 points: they are read as plain columns (no ORM objects) and the
JSON is written with orjson straight from the rows (no pydantic object per point). The
shape is MetricPage's exactly (it stays the route's documented response model).
"""
from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response

from api.auth import TenantDep
from api.deps import load_job
from api.errors import responses
from api.reads import run_read
from api.schemas import MetricPage
from core.metrics import METRIC_NAMES, finite
from core.metrics.pages import step_page
from core.tenancy import Tenant

router = APIRouter(prefix="/jobs", tags=["metrics"])

MetricName = Literal[METRIC_NAMES]  # type: ignore[valid-type]


def page_json(job_id: str, rows, next_since_step: int | None) -> bytes:
    """MetricPage's JSON for rows of core.metrics.pages.PAGE_COLUMNS (what pydantic would
    write: a non-finite value is null, a UTC time ends in Z)."""
    metrics = [{"name": name, "epoch": epoch, "batch": batch, "step": step,
                "value": finite(value), "time": time}
               for name, epoch, batch, step, value, time in rows]
    return orjson.dumps({"job_id": job_id, "metrics": metrics,
                         "next_since_step": next_since_step}, option=orjson.OPT_UTC_Z)


@router.get("/{job_id}/metrics", response_model=MetricPage, responses=responses(404, 422))
async def read_metrics(job_id: str, tenant: TenantDep, request: Request,
                       name: MetricName | None = None,
                       since_step: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
                       limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> Response:
    """Points with step > since_step; next_since_step continues where this page ended."""
    return Response(await run_read(request, metrics_page, job_id, tenant, name, since_step,
                                   limit), media_type="application/json")


def metrics_page(session, job_id: str, tenant: Tenant, name: str | None,
                 since_step: int | None, limit: int) -> bytes:
    job = load_job(session, job_id, tenant)
    rows, next_since_step = step_page(session, job.id, name, since_step, limit)
    return page_json(job.id, rows, next_since_step)
