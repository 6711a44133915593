"""GET /metrics with `trainhub api --workers 2`: every process's requests are counted,
whichever process answers the scrape."""
from __future__ import annotations

import re

import httpx
import pytest

from tests.procs import Proc, env_with, free_port, wait_http

pytestmark = pytest.mark.slow


def request_count(text: str) -> float:
    pattern = (r'^trainhub_request_duration_seconds_count'
               r'\{method="GET",route="/jobs/\{job_id\}",status="404"\} (\S+)$')
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_two_api_processes_report_all_requests(tmp_path):
    port = free_port()
    env = env_with(TRAINHUB_DATA_DIR=str(tmp_path / "data"), PROMETHEUS_MULTIPROC_DIR=None)
    proc = Proc(["api", "--port", str(port), "--workers", "2"], env, tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base, proc)
        for _ in range(40):  # new connections: spread over both processes
            with httpx.Client() as client:
                resp = client.get(f"{base}/jobs/{'0' * 32}")
                assert resp.status_code == 404
        for _ in range(5):  # each scrape may land on either process: all say 40
            with httpx.Client() as client:
                assert request_count(client.get(f"{base}/metrics").text) == 40
        assert (tmp_path / "data" / "prometheus" / str(port)).is_dir()
    finally:
        proc.stop()
    assert len(set(re.findall(r"child process \[(\d+)\]", proc.log()))) == 2  # two processes
