"""The API's access log (TRAINHUB_ACCESS_LOG): by default the requests that change
something and every answer of 400 or more, not the reads an open web page sends every 2 s;
`all` and `off` as they say. Over real HTTP, read from an API process's own output."""
from __future__ import annotations

import logging
import time

import httpx
import pytest

from api.access_log import AccessLogPolicy
from core import jobs
from core.db import session_scope
from core.jobspec import JobSpec
from tests.procs import env_with, start_api

READS = ['"GET /jobs HTTP/1.1" 200', '"GET /health HTTP/1.1" 200',
         '"HEAD /health HTTP/1.1" 200', '"GET /static/app.js HTTP/1.1" 200']
CHANGES = ['/cancel HTTP/1.1" 202', '"POST /jobs HTTP/1.1" 422']
ERRORS = ['"GET /no-such-route HTTP/1.1" 404', '"DELETE /health HTTP/1.1" 405']


def exercise(base: str) -> None:
    with session_scope() as session:  # queued, and cancelled below: nothing is enqueued
        job_id = jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved()).id
    with httpx.Client(base_url=base, timeout=15) as client:
        for _ in range(5):  # a page polling
            assert client.get("/jobs").status_code == 200
            assert client.get(f"/jobs/{job_id}").status_code == 200
        assert client.get("/health").status_code == 200
        assert client.head("/health").status_code == 200
        assert client.get("/static/app.js").status_code == 200
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 202
        assert client.post("/jobs", json={"model": "nope"}).status_code == 422
        assert client.delete("/health").status_code == 405
        assert client.get("/no-such-route").status_code == 404


@pytest.mark.parametrize("mode, shown", [
    (None, CHANGES + ERRORS),
    ("all", READS + CHANGES + ERRORS),
    ("off", []),
], ids=["default", "all", "off"])
def test_the_access_log_shows_what_the_setting_says(tmp_path, mode, shown):
    proc, base = start_api(env_with(TRAINHUB_ACCESS_LOG=mode), tmp_path)
    try:
        exercise(base)
        if shown:
            proc.wait_for_log(shown[-1], timeout=10)
        else:
            time.sleep(1)
    finally:
        proc.stop()
    lines = [line for line in proc.log().splitlines() if "uvicorn.access" in line]
    for needle in READS + CHANGES + ERRORS:
        assert any(needle in line for line in lines) == (needle in shown), (needle, lines)
    polled = [line for line in lines if '"GET /jobs' in line]
    assert len(polled) == (10 if mode == "all" else 0), polled


def test_a_record_of_another_shape_is_kept():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s", ("x",), None)
    assert AccessLogPolicy("changes").filter(record)
    assert not AccessLogPolicy("off").filter(record)
