"""A job whose worker's disk is full fails with `no space left on device: <path>`, whichever
of its writes found it full: the epoch checkpoint, the dataset's tensor file, the TensorBoard
run. A real full tmpfs over that folder of the data dir; worker.runner.run in process on the
real Postgres."""
from __future__ import annotations

import pytest

from core import jobs
from core.db import session_scope, upgrade_schema
from core.jobspec import JobSpec
from core.tables import Job
from tests.mounts import fill, tmpfs
from worker.runner import run


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


@pytest.mark.parametrize("folder, written", [
    ("artifacts", lambda job_id: f"artifacts/jobs/{job_id}/checkpoints/epoch-0001.pt"),
    ("cache", lambda job_id: "cache/digits.pt"),
    ("tensorboard", lambda job_id: f"tensorboard/full_disk-{job_id[:8]}"),
])
def test_a_full_disk_fails_the_job_naming_the_path(data_dir, folder, written):
    with session_scope() as session:
        job_id = jobs.create_job(session, JobSpec(
            name="full disk", model="mlp", dataset="digits", device="cpu",
            hyperparameters={"epochs": 1, "batch_size": 64, "log_every": 5}).resolved()).id
    with tmpfs(data_dir / folder, 64 * 1024) as mount:
        fill(mount)
        assert run(job_id, "full-disk-worker") == "failed"
    with session_scope() as session:
        error = session.get(Job, job_id).error
    assert error == f"no space left on device: {data_dir / written(job_id)}"
