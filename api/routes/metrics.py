"""Metric history of a job, in step order, paged by step."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deps import JobDep, SessionDep
from api.errors import responses
from api.schemas import MetricPage, MetricPointPublic
from core.metrics import METRIC_NAMES
from core.tables import MetricPoint

router = APIRouter(prefix="/jobs", tags=["metrics"])

MetricName = Literal[METRIC_NAMES]  # type: ignore[valid-type]


@router.get("/{job_id}/metrics", response_model=MetricPage, responses=responses(404, 422))
def read_metrics(job: JobDep, session: SessionDep, name: MetricName | None = None,
                 since_step: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
                 limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> MetricPage:
    """Points with step > since_step; next_since_step continues where this page ended."""
    query = select(MetricPoint).where(MetricPoint.job_id == job.id)
    if name is not None:
        query = query.where(MetricPoint.name == name)
    if since_step is not None:
        query = query.where(MetricPoint.step > since_step)
    rows = list(session.scalars(query.order_by(MetricPoint.step, MetricPoint.id).limit(limit + 1)))
    next_since_step = None
    if len(rows) > limit:
        # Never split one step's points across pages: paging is by step.
        cut_step = rows[limit].step
        rows = [r for r in rows[:limit] if r.step != cut_step] or list(
            session.scalars(query.where(MetricPoint.step == cut_step).order_by(MetricPoint.id)))
        next_since_step = rows[-1].step
    return MetricPage(job_id=job.id, metrics=[MetricPointPublic.from_row(r) for r in rows],
                      next_since_step=next_since_step)
