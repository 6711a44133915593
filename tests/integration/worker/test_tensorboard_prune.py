"""A deleted job leaves TensorBoard: DELETE /jobs/{id} removes its run where the API shares
the data dir, and every worker's reaper pass removes the runs of jobs that no longer exist
(on a worker's own disk, the only way they go). Real Postgres; the API in process."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import app
from core import jobs
from core.config import get_settings
from core.db import session_scope, upgrade_schema
from core.ids import new_id
from core.jobspec import JobSpec
from core.states import JobStatus
from core.tensorboard_runs import job_runs, run_folder
from worker.reaper import prune_tensorboard


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


@pytest.fixture
def root(data_dir):
    return get_settings().tensorboard_dir


def finished_job(name: str) -> str:
    with session_scope() as session:
        job_id = jobs.create_job(session, JobSpec(name=name, model="mlp",
                                                  dataset="digits").resolved()).id
        jobs.transition(session, job_id, JobStatus.cancelled)
    return job_id


def test_deleting_a_job_removes_its_tensorboard_run_and_only_its(root):
    job_id, other = finished_job("lenet-digits"), finished_job("lenet-digits")
    mine, kept = run_folder(root, job_id, "lenet-digits"), run_folder(root, other, "lenet-digits")
    (mine / "events.out.tfevents.1").write_bytes(b"x")
    with TestClient(app) as client:
        assert client.delete(f"/jobs/{job_id}").status_code == 204
    assert not mine.exists() and job_runs(root, other) == [kept]


def test_the_reapers_pass_removes_the_runs_of_deleted_jobs(root):
    alive = finished_job("kept")
    deleted = new_id()  # a job deleted by an API that does not see this disk
    kept, gone = run_folder(root, alive, "kept"), run_folder(root, deleted, "gone")
    legacy = root / new_id()  # a run named by the bare id, its job gone too
    legacy.mkdir()
    assert prune_tensorboard(get_settings()) == sorted([gone, legacy])
    assert kept.is_dir() and not gone.exists() and not legacy.exists()
    assert prune_tensorboard(get_settings()) == []
