"""core.dataset_uploads.delete_upload on the real Postgres: what may not be deleted (a
built-in, an upload still processing, one a queued job uses) and what goes with an upload
that may. (POST /datasets, over accept_upload, is tested over HTTP in
tests/integration/api/test_bad_input.py and tests/e2e/test_datasets.py.)"""
from __future__ import annotations

import io

import pytest

from core import jobs
from core.artifacts import dataset_prefix, dataset_upload_key, get_store
from core.dataset_uploads import delete_upload
from core.db import session_scope, upgrade_schema
from core.errors import Conflict
from core.ids import new_id
from core.jobspec import JobSpec
from core.states import JobStatus
from core.tables import Dataset
from core.tenancy import LOCAL_ADMIN


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def upload(status: str) -> str:
    dataset_id = new_id()
    get_store().save_stream(dataset_upload_key(dataset_id), io.BytesIO(b"x" * 10), 100)
    with session_scope() as session:
        session.add(Dataset(id=dataset_id, name="d", status=status, options={},
                            progress_done=0))
    return dataset_id


def exists(dataset_id: str) -> bool:
    with session_scope() as session:
        return session.get(Dataset, dataset_id) is not None


def test_a_built_in_and_an_upload_still_processing_stay():
    with pytest.raises(Conflict, match="built in"), session_scope() as session:
        delete_upload(session, "digits", LOCAL_ADMIN)
    dataset_id = upload("processing")
    with pytest.raises(Conflict, match="still processing"), session_scope() as session:
        delete_upload(session, dataset_id, LOCAL_ADMIN)
    assert exists(dataset_id)


def test_an_upload_a_queued_job_uses_stays_until_the_job_ends():
    dataset_id = upload("ready")
    with session_scope() as session:
        spec = {**JobSpec(model="mlp", dataset="digits").resolved(), "dataset": dataset_id}
        job_id = jobs.create_job(session, spec).id
    with pytest.raises(Conflict, match=f"used by 1 queued, running or paused job.*{job_id}"), \
            session_scope() as session:
        delete_upload(session, dataset_id, LOCAL_ADMIN)
    with session_scope() as session:
        jobs.transition(session, job_id, JobStatus.cancelled)
    with session_scope() as session:
        delete_upload(session, dataset_id, LOCAL_ADMIN)
    assert not exists(dataset_id)
    assert not get_store().path(dataset_prefix(dataset_id)).exists()


def test_an_upload_a_paused_trial_uses_stays():
    """A paused asha trial may be promoted and train again: its dataset is still in use."""
    dataset_id = upload("ready")
    with session_scope() as session:
        spec = {**JobSpec(model="mlp", dataset="digits").resolved(), "dataset": dataset_id}
        job_id = jobs.create_job(session, spec).id
    with session_scope() as session:
        jobs.claim(session, job_id, "w1", "cpu", 60)
    with session_scope() as session:
        jobs.pause(session, job_id, 1, None)
    with pytest.raises(Conflict, match=f"paused job.*{job_id}"), session_scope() as session:
        delete_upload(session, dataset_id, LOCAL_ADMIN)
    assert exists(dataset_id)
    with session_scope() as session:
        jobs.transition(session, job_id, JobStatus.stopped)
    with session_scope() as session:
        delete_upload(session, dataset_id, LOCAL_ADMIN)
    assert not exists(dataset_id)
