"""GET /metrics: Prometheus series named trainhub_*, job counts from the database."""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from api.main import app
from core import jobs
from core.db import session_scope
from core.jobspec import JobSpec
from core.states import JobStatus
from core.tables import Job


@pytest.fixture(scope="module")
def client():
    with TestClient(app) as c:
        yield c


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in:\n{text[:2000]}"
    return float(match.group(1))


def test_job_counts_and_queue_depth_come_from_the_database(client):
    before = client.get("/metrics").text
    with session_scope() as session:
        jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved())
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    after = resp.text
    assert sample(after, "trainhub_queue_depth") == sample(before, "trainhub_queue_depth") + 1
    with session_scope() as session:
        queued = session.query(Job).filter(Job.status == JobStatus.queued.value).count()
    assert sample(after, "trainhub_jobs", '{status="queued"}') == queued
    for status in JobStatus:
        sample(after, "trainhub_jobs", f'{{status="{status.value}"}}')
    assert sample(after, "trainhub_points_written_total") >= 0


def test_request_durations_are_labelled_by_route_template(client):
    client.get("/jobs/" + "0" * 32)  # a 404 on a templated route
    text = client.get("/metrics").text
    count = sample(text, "trainhub_request_duration_seconds_count",
                   '{method="GET",route="/jobs/{job_id}",status="404"}')
    assert count >= 1
    assert "0" * 32 not in text  # ids never become series
    assert "trainhub_predict_duration_seconds_bucket" in text
    assert "trainhub_event_streams" in text
