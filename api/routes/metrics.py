"""Metric history of a job, in step order, paged by step.

A page can hold 10,000 points: they are read as plain columns (no ORM objects) and the
JSON is written with orjson straight from the rows (no pydantic object per point). The
shape is MetricPage's exactly (it stays the route's documented response model).
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select

from api.auth import TenantDep
from api.deps import load_job
from api.errors import responses
from api.reads import run_read
from api.schemas import MetricPage
from core.metrics import METRIC_NAMES
from core.tables import MetricPoint
from core.tenancy import Tenant

router = APIRouter(prefix="/jobs", tags=["metrics"])

MetricName = Literal[METRIC_NAMES]  # type: ignore[valid-type]

_COLUMNS = (MetricPoint.name, MetricPoint.epoch, MetricPoint.batch, MetricPoint.step,
            MetricPoint.value, MetricPoint.time)
_STEP = 3  # the step's place in a row of _COLUMNS


def page_json(job_id: str, rows, next_since_step: int | None) -> bytes:
    """MetricPage's JSON for rows of _COLUMNS (what pydantic would write: a non-finite value
    is null, a UTC time ends in Z)."""
    isfinite = math.isfinite
    metrics = [{"name": name, "epoch": epoch, "batch": batch, "step": step,
                "value": value if value is not None and isfinite(value) else None,
                "time": time}
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
    query = select(*_COLUMNS).where(MetricPoint.job_id == job.id)
    if name is not None:
        query = query.where(MetricPoint.name == name)
    if since_step is not None:
        query = query.where(MetricPoint.step > since_step)
    rows = session.execute(
        query.order_by(MetricPoint.step, MetricPoint.id).limit(limit + 1)).all()
    next_since_step = None
    if len(rows) > limit:
        # Never split one step's points across pages: paging is by step.
        cut_step = rows[limit][_STEP]
        rows = [r for r in rows[:limit] if r[_STEP] != cut_step] or session.execute(
            query.where(MetricPoint.step == cut_step).order_by(MetricPoint.id)).all()
        next_since_step = rows[-1][_STEP]
    return page_json(job.id, rows, next_since_step)
