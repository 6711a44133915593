"""core.job_submission.submit, the whole submission outside a request, on the real Postgres:
a job made and handed to the broker once, a key's replay and its conflict, and a broker that
is down failing the job and releasing its key. (POST /jobs, which runs the same steps one by
one, is tested over HTTP in tests/integration/test_api.py and api/test_bad_input.py.)"""
from __future__ import annotations

import uuid

import pytest

from core import job_submission, queue
from core.config import get_settings
from core.db import session_scope, upgrade_schema
from core.errors import Conflict, FieldError
from core.jobspec import JobSpec
from core.queue import ENQUEUE_FAILED, RUN_JOB_TASK, BrokerUnavailable
from core.tables import Job
from core.tenancy import LOCAL_ADMIN


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def spec(**fields) -> JobSpec:
    return JobSpec(model="mlp", dataset="digits", **fields)


def test_submit_makes_a_queued_job_and_sends_it_once(sent):
    with session_scope() as session:
        done = job_submission.submit(session, spec(name="svc"), LOCAL_ADMIN, get_settings())
        job_id = done.job.id
    assert not done.replayed
    assert sent == [(RUN_JOB_TASK, (job_id,), get_settings().queue)]
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "queued" and job.name == "svc" and job.enqueued_at is not None
        assert job.total_steps > 0 and job.request_hash == job_submission.request_hash(
            spec(name="svc").resolved())


def test_a_key_replays_its_job_and_refuses_another_body(sent):
    key = f"k-{uuid.uuid4().hex}"
    with session_scope() as session:
        first = job_submission.submit(session, spec(), LOCAL_ADMIN, get_settings(), key)
    with session_scope() as session:
        again = job_submission.submit(session, spec(), LOCAL_ADMIN, get_settings(), key)
    assert again.replayed and again.job.id == first.job.id
    assert len(sent) == 1  # the replay sends nothing
    with pytest.raises(Conflict, match="another request body"), session_scope() as session:
        job_submission.submit(session, spec(name="other"), LOCAL_ADMIN, get_settings(), key)


def test_a_broker_that_is_down_fails_the_job_and_releases_its_key(monkeypatch):
    def down(*_args, **_kwargs):
        raise BrokerUnavailable("connection refused")

    monkeypatch.setattr(queue, "enqueue", down)
    key = f"k-{uuid.uuid4().hex}"
    with pytest.raises(BrokerUnavailable, match="was not queued"), session_scope() as session:
        job_submission.submit(session, spec(), LOCAL_ADMIN, get_settings(), key)
    with session_scope() as session:
        job = session.query(Job).filter(Job.request_hash == job_submission.request_hash(
            spec().resolved()), Job.error == ENQUEUE_FAILED).order_by(
            Job.created_at.desc()).first()
        assert job is not None and job.status == "failed" and job.idempotency_key is None
        assert job_submission.by_key(session, key, LOCAL_ADMIN) is None


def test_the_parameter_cap_counts_an_uploads_own_classes(sent, monkeypatch):
    """The spec alone checks an upload at 2 classes (it cannot see more); the submission
    checks it again at the upload's 1000, where the head alone adds 512 x 990 parameters."""
    from core.ids import new_id
    from core.tables import Dataset
    from models import MODELS

    zoo = MODELS["torchvision.resnet18"].zoo
    monkeypatch.setenv("TRAINHUB_MAX_MODEL_PARAMETERS", str(zoo.parameters(500)))
    get_settings.cache_clear()
    dataset_id = new_id()
    with session_scope() as session:
        session.add(Dataset(id=dataset_id, name="many.zip", status="ready", options={},
                            classes=[f"c{i}" for i in range(1000)], shape=[3, 32, 32],
                            counts={"train": {"c0": 8}, "test": {"c0": 2}}))
    try:
        over = JobSpec(model="torchvision.resnet18", dataset=dataset_id)  # passes at 2 classes
        with pytest.raises(FieldError, match=r"torchvision.resnet18 has [\d,]+ parameters "
                                             r"with 1000 classes, over this server's cap"), \
                session_scope() as session:
            job_submission.submit(session, over, LOCAL_ADMIN, get_settings())
        assert sent == []
    finally:
        get_settings.cache_clear()
