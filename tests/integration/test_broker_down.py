"""A backing service that is down is a 503 that says so, never a 500 or a lost job."""
from __future__ import annotations

import httpx
import pytest

from tests.conftest import create_database
from tests.procs import env_with, free_port, start_api


@pytest.fixture(scope="module")
def api_without_broker(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nobroker")
    dead = free_port()  # nothing listens there
    env = env_with(TRAINHUB_DATABASE_URL=create_database("trainhub_nobroker"),
                   TRAINHUB_DATA_DIR=str(tmp / "data"),
                   TRAINHUB_BROKER_URL=f"redis://127.0.0.1:{dead}/0",
                   TRAINHUB_REDIS_URL=f"redis://127.0.0.1:{dead}/1")
    proc, base = start_api(env, tmp)
    with httpx.Client(base_url=base, timeout=60) as client:
        yield client
    proc.stop()


def test_health_is_503_naming_what_is_down(api_without_broker):
    resp = api_without_broker.get("/health")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "degraded" and body["database"] == "ok"
    assert body["broker"].startswith("unavailable") and body["events"].startswith("unavailable")


def test_submission_is_503_and_the_job_is_recorded_failed(api_without_broker):
    resp = api_without_broker.post("/jobs", json={"model": "lenet", "dataset": "digits"})
    assert resp.status_code == 503 and "broker unavailable" in resp.json()["detail"]
    jobs = api_without_broker.get("/jobs").json()["jobs"]
    assert jobs[0]["status"] == "failed"
    assert jobs[0]["error"] == "could not enqueue: the broker was unreachable"
