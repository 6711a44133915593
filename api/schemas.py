"""Response shapes, built from table rows."""
from __future__ import annotations

import math
from datetime import datetime

from pydantic import BaseModel

from core.tables import Job, MetricPoint


class Progress(BaseModel):
    epoch: int
    step: int
    total_steps: int | None


class JobPublic(BaseModel):
    id: str
    name: str
    status: str
    model: str
    dataset: str
    spec: dict
    progress: Progress
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    worker: str | None
    device: str | None
    metrics: dict[str, float | None]
    error: str | None
    cancel_requested: bool

    @classmethod
    def from_row(cls, job: Job) -> "JobPublic":
        return cls(
            id=job.id, name=job.name, status=job.status, model=job.model, dataset=job.dataset,
            spec=job.spec, progress=Progress(epoch=job.epoch, step=job.step,
                                             total_steps=job.total_steps),
            created_at=job.created_at, updated_at=job.updated_at, started_at=job.started_at,
            finished_at=job.finished_at, attempts=job.attempts, worker=job.worker,
            device=job.device, metrics={k: finite(v) for k, v in (job.final_metrics or {}).items()},
            error=job.error, cancel_requested=job.cancel_requested)


class JobList(BaseModel):
    jobs: list[JobPublic]
    next_cursor: str | None


class MetricPointPublic(BaseModel):
    name: str
    epoch: int
    batch: int
    step: int
    value: float | None  # null when training diverged (NaN or infinity)
    time: datetime

    @classmethod
    def from_row(cls, point: MetricPoint) -> "MetricPointPublic":
        return cls(name=point.name, epoch=point.epoch, batch=point.batch, step=point.step,
                   value=finite(point.value), time=point.time)


class MetricPage(BaseModel):
    job_id: str
    metrics: list[MetricPointPublic]
    next_since_step: int | None


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a diverged value is reported as null."""
    return value if value is not None and math.isfinite(value) else None
