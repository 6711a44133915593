"""worker.sink.JobReporter against the real Postgres and Redis: points stored once, diverged
values kept in the database and null on the live stream, progress on the row and the stream,
and a Redis outage that costs no point."""
from __future__ import annotations

import logging
import math
import time

import pytest
from sqlalchemy import select

from core import events, jobs
from core.config import get_settings
from core.db import session_scope, upgrade_schema
from core.jobspec import JobSpec
from core.tables import Job, MetricPoint
from worker.reporting import Metric
from worker.sink import JobReporter

CLOSED_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


@pytest.fixture
def redis_client():
    return events.connect(get_settings().redis_url)


@pytest.fixture
def job_id(redis_client):
    with session_scope() as session:
        job_id = jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved()).id
    yield job_id
    redis_client.delete(events.stream_key(job_id))


def reporter_for(job_id: str, redis_client) -> JobReporter:
    # Flushes only when told to (or when the buffer is full): the test decides when.
    reporter = JobReporter(job_id, get_settings(), redis_client, flush_every_s=3600)
    reporter.flush()  # nothing buffered: only starts the interval now
    return reporter


def stored(job_id: str) -> list[tuple[str, int, float]]:
    with session_scope() as session:
        rows = session.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id)
                               .order_by(MetricPoint.step, MetricPoint.name))
        return [(p.name, p.step, p.value) for p in rows]


def stream(redis_client, job_id: str) -> list[dict]:
    return events.stored_events(redis_client, job_id)


def test_points_are_buffered_until_flush_and_stored_once(job_id, redis_client):
    reporter = reporter_for(job_id, redis_client)
    reporter.metrics([Metric("loss", 1, 5, 5, 2.0), Metric("loss", 1, 10, 10, 1.5)])
    reporter.metrics([Metric("loss", 1, 5, 5, 9.0)])  # the same (name, step) again
    assert stored(job_id) == []

    reporter.flush()
    reporter.flush()  # nothing left to write
    assert stored(job_id) == [("loss", 5, 2.0), ("loss", 10, 1.5)]

    reporter.metrics([Metric("loss", 1, 10, 10, 7.0), Metric("eval_accuracy", 1, 12, 12, 0.5)])
    reporter.flush()
    assert stored(job_id) == [("loss", 5, 2.0), ("loss", 10, 1.5), ("eval_accuracy", 12, 0.5)]

    published = [(e["name"], e["step"], e["value"]) for e in stream(redis_client, job_id)
                 if e["type"] == "metric"]
    assert ("loss", 5, 2.0) in published and ("eval_accuracy", 12, 0.5) in published


def test_a_nan_is_stored_and_published_as_null(job_id, redis_client):
    reporter = reporter_for(job_id, redis_client)
    reporter.metrics([Metric("loss", 1, 5, 5, float("nan")), Metric("loss", 1, 10, 10, 0.25)])
    reporter.flush()

    [(name, step, value), later] = stored(job_id)
    assert (name, step) == ("loss", 5) and math.isnan(value)
    assert later == ("loss", 10, 0.25)
    metric_events = [e for e in stream(redis_client, job_id) if e["type"] == "metric"]
    assert [(e["step"], e["value"]) for e in metric_events] == [(5, None), (10, 0.25)]
    first_id = metric_events[0].pop("id")
    assert metric_events[0] == {"type": "metric", "name": "loss", "epoch": 1, "batch": 5,
                                "step": 5, "value": None, "prev": 0}
    # Each carries its row id and how far the job's stored points had got before it.
    assert metric_events[1]["id"] > first_id and metric_events[1]["prev"] == 0


def test_progress_updates_the_running_job_and_is_published(job_id, redis_client):
    with session_scope() as session:
        before = jobs.claim(session, job_id, "w@test", "cpu", lease_seconds=5).lease_expires_at
    reporter = reporter_for(job_id, redis_client)

    reporter.progress(1, 7, 20)  # hands over: the writer thread stores it, no flush needed

    deadline = time.monotonic() + 10
    while True:
        with session_scope() as session:
            job = session.get(Job, job_id)
            if (job.epoch, job.step, job.total_steps) == (1, 7, 20) or \
                    time.monotonic() > deadline:
                break
        time.sleep(0.05)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.epoch, job.step, job.total_steps) == (1, 7, 20)
        assert job.lease_expires_at > before  # renewed for settings.lease_seconds (>= 5)
    assert {"type": "progress", "epoch": 1, "step": 7, "total_steps": 20} in stream(
        redis_client, job_id)


def test_an_unreachable_redis_costs_no_point(job_id, caplog):
    reporter = reporter_for(job_id, events.connect(CLOSED_REDIS))
    points = [Metric("loss", 1, step, step, 1.0 / step) for step in range(5, 55, 5)]
    reporter.metrics(points)

    with caplog.at_level(logging.WARNING, logger="core.events"):
        reporter.flush()  # must not raise

    assert stored(job_id) == [("loss", p.step, p.value) for p in points]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert job_id in warnings[0].getMessage() and "10 event(s)" in warnings[0].getMessage()


def test_published_points_say_how_far_the_job_had_written(job_id, redis_client):
    """After points that never reached Redis (an outage), the next event's `prev` is past
    what a reader saw: it knows to fill the gap from the database."""
    quiet = reporter_for(job_id, None)  # writes to Postgres, publishes nothing
    quiet.metrics([Metric("loss", 1, 5, 5, 1.0)])
    quiet.flush()
    reporter = reporter_for(job_id, redis_client)
    reporter.metrics([Metric("loss", 1, 10, 10, 0.5)])
    reporter.flush()
    [event] = [e for e in stream(redis_client, job_id) if e["type"] == "metric"]
    with session_scope() as session:
        first = session.scalar(select(MetricPoint.id).where(MetricPoint.job_id == job_id,
                                                             MetricPoint.step == 5))
    assert event["prev"] == first and event["id"] > first
