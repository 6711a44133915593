"""core.metrics.store on the real Postgres: a point written twice is kept once (the first
stays), and a job's points go with it."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core import jobs
from core.db import session_scope, upgrade_schema
from core.jobspec import JobSpec
from core.metrics import store as metric_store
from core.tables import MetricPoint


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


@pytest.fixture
def job_id() -> str:
    with session_scope() as session:
        return jobs.create_job(session, JobSpec(model="lenet", dataset="digits").resolved()).id


def test_metric_point_written_twice_is_kept_once(job_id):
    point = {"name": "loss", "epoch": 1, "batch": 100, "step": 100, "value": 2.0}
    with session_scope() as s:
        metric_store.insert_metrics(s, job_id, [point, {**point, "name": "lr", "value": 0.1}])
    with session_scope() as s:
        metric_store.insert_metrics(s, job_id, [{**point, "value": 9.0},
                                                {**point, "step": 200, "batch": 200}])
    with session_scope() as s:
        rows = s.execute(select(MetricPoint.name, MetricPoint.step, MetricPoint.value)
                         .where(MetricPoint.job_id == job_id)
                         .order_by(MetricPoint.step, MetricPoint.name)).all()
    assert [tuple(r) for r in rows] == [("loss", 100, 2.0), ("lr", 100, 0.1), ("loss", 200, 2.0)]


def test_deleting_a_job_cascades_to_its_points(job_id):
    with session_scope() as s:
        metric_store.insert_metrics(s, job_id, [{"name": "loss", "epoch": 1, "batch": 1,
                                                 "step": 1, "value": 1.0}])
    with session_scope() as s:
        s.delete(s.get(jobs.Job, job_id))
    with session_scope() as s:
        left = s.scalar(select(func.count()).select_from(MetricPoint)
                        .where(MetricPoint.job_id == job_id))
    assert left == 0
