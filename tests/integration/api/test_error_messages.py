"""Error messages a person reads, with no parser's raw words in them: malformed JSON says
where (line and column, as an editor counts them) and why, a validator's reason comes
without pydantic's "Value error, " in front (a sweep's quote of a trial's too), and
cancelling a job that has ended says so.
In-process (TestClient) on the test database: the app's own answers are the point."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from api.main import app
from core import jobs
from core.db import session_scope
from core.jobspec import JobSpec
from core.states import JobStatus


@pytest.fixture(scope="module")
def client():
    with TestClient(app) as c:  # the lifespan brings the schema up to date
        yield c


def post_raw(client, body: bytes):
    return client.post("/jobs", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("body", [
    b'{"model": "lenet", "dataset": "digits",}',
    b'{"model": "lenet",\n "dataset" "digits"}',
    b'{"model": "lenet",\r\n  "dataset": "digits",\n  "hyperparameters": {"lr": 0.1,, }}',
    b'{not json',
    '{"name": "\u00e9t\u00e9", "model": }'.encode(),
    b'[1, 2',
])
def test_malformed_json_says_where_and_why_as_json_itself_would(client, body):
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(body)
    resp = post_raw(client, body)
    assert resp.status_code == 422
    err = expected.value
    assert resp.json()["detail"] == [{
        "field": "body", "type": "json_invalid", "loc": ["body"],
        "msg": f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"}]


def test_the_issues_example_points_at_column_40(client):
    resp = post_raw(client, b'{"model": "lenet", "dataset": "digits",}')
    assert resp.json()["detail"][0]["msg"] == (
        "invalid JSON at line 1 column 40: Expecting property name enclosed in double quotes")


@pytest.mark.parametrize("job, field, start", [
    ({"model": "nope", "dataset": "digits"}, "model", "unknown model 'nope'; allowed: "),
    ({"model": "lenet", "dataset": "nope"}, "dataset", "unknown dataset 'nope'; allowed: "),
    ({"model": "lenet", "dataset": "digits",
      "hyperparameters": {"nesterov": True, "momentum": 0}}, "hyperparameters",
     "nesterov: true needs optimizer 'sgd' with momentum > 0"),
    ({"model": "lenet", "dataset": "digits",
      "hyperparameters": {"batch_size": 4, "world_size": 3}}, "hyperparameters.world_size",
     "must divide batch_size 4"),
])
def test_a_validators_reason_comes_without_pydantics_prefix(client, job, field, start):
    resp = client.post("/jobs", json=job)
    assert resp.status_code == 422
    [problem] = resp.json()["detail"]
    assert problem["field"] == field and problem["type"] == "value_error"
    assert problem["msg"].startswith(start), problem["msg"]


@pytest.mark.parametrize("space, field, reason", [
    ({"hyperparameters.world_size": {"grid": [1, 3]}}, "space.hyperparameters.world_size",
     "hyperparameters.world_size=3 (a bound of its grid) is not a value a job takes: must "
     "divide batch_size 4"),
    ({"hyperparameters.nesterov": {"grid": [False, True]},
      "hyperparameters.momentum": {"grid": [0.9, 0]}}, "space.hyperparameters.momentum",
     "trial 3 draws hyperparameters.momentum=0, which no job takes: nesterov: true needs "
     "optimizer 'sgd' with momentum > 0"),
])
def test_a_sweeps_message_quotes_a_trials_reason_without_pydantics_prefix(client, space,
                                                                         field, reason):
    """POST /sweeps checks each trial's job spec and quotes why one is refused: the
    validator's reason, not pydantic's `Value error, ` before it."""
    resp = client.post("/sweeps", json={
        "base": {"model": "lenet", "dataset": "digits", "hyperparameters": {"batch_size": 4}},
        "strategy": "grid", "space": space})
    assert resp.status_code == 422, resp.text
    [problem] = resp.json()["detail"]
    assert problem["field"] == field and problem["msg"].startswith(reason), problem["msg"]
    assert "error," not in problem["msg"]


def new_job() -> str:
    with session_scope() as session:
        return jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved()).id


def test_cancelling_a_cancelled_job_says_it_already_ended(client):
    job_id = new_job()
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 202
    again = client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert again.json() == {"detail": f"job {job_id} already ended (cancelled); only a queued, "
                                      "running or paused job can be cancelled"}


def test_cancelling_a_finished_job_names_how_it_ended(client):
    job_id = new_job()
    with session_scope() as session:
        jobs.transition(session, job_id, JobStatus.running)
        jobs.transition(session, job_id, JobStatus.succeeded)
    resp = client.post(f"/jobs/{job_id}/cancel")
    assert resp.status_code == 409
    assert resp.json()["detail"] == (f"job {job_id} already ended (succeeded); only a queued, "
                                     "running or paused job can be cancelled")
