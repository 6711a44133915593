"""A worker whose data folder cannot be written takes no job: it refuses to start, saying
which folder and why in one line, and one whose folder turns read-only while it runs leaves
GET /workers and stops, the jobs left queued for a sound worker. Real worker processes: the
check runs at the worker's start and in its main process; the folder is a real read-only
mount (tests/mounts.py), which root's chmod could not make."""
from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.conftest import create_database
from tests.e2e.conftest import running_stack
from tests.mounts import make_read_only, tmpfs
from tests.procs import Proc, env_with, wait_until

pytestmark = pytest.mark.slow


def test_a_worker_refuses_to_start_on_a_read_only_data_folder(tmp_path):
    with tmpfs(tmp_path / "data", 1 << 20) as data:
        make_read_only(data)
        worker = Proc(["worker", "--name", "ro@test"],
                      env_with(TRAINHUB_DATABASE_URL=create_database("trainhub_ro"),
                               TRAINHUB_DATA_DIR=str(data),
                               TRAINHUB_QUEUE=f"test-{uuid.uuid4().hex[:8]}"),
                      tmp_path / "worker.log")
        try:
            assert worker.popen.wait(timeout=120) == 1
        finally:
            worker.stop()
    lines = [line for line in worker.log().splitlines() if line.strip()]
    assert lines[-1] == (f"error: TRAINHUB_DATA_DIR={str(data)!r}: cannot write to {data} "
                         "(Read-only file system)"), lines
    assert "Traceback" not in worker.log() and " ready." not in worker.log()


def test_a_worker_whose_folder_turns_read_only_leaves_and_takes_no_job(tmp_path):
    job = {"model": "mlp", "dataset": "digits", "device": "cpu",
           "hyperparameters": {"epochs": 1, "batch_size": 64}}
    with tmpfs(tmp_path / "data-worker1", 64 << 20) as data, \
            running_stack(tmp_path, "turns-ro@test", own_data_dirs=True,
                          TRAINHUB_WORKER_HEARTBEAT_SECONDS="0.5") as stack:
        base, worker = stack["base"], stack["worker"]

        def listed() -> set[str]:
            return {w["name"] for w in httpx.get(f"{base}/workers", timeout=10)
                    .json()["workers"]}

        wait_until(lambda: listed() == {"turns-ro@test"}, timeout=30)
        make_read_only(data)
        wait_until(lambda: not listed(), timeout=30)
        assert worker.popen.wait(timeout=60) == 0  # a warm shutdown, as on SIGTERM
        ids = [httpx.post(f"{base}/jobs", json=job, timeout=10).json()["id"]
               for _ in range(5)]
        time.sleep(2)
        states = {httpx.get(f"{base}/jobs/{i}", timeout=10).json()["status"] for i in ids}
        assert states == {"queued"}
        assert (f"cannot write to {data} (Read-only file system): this worker takes no more "
                "jobs and stops") in worker.log()
