"""GET /metrics: Prometheus series named trainhub_*, job, sweep and trial counts from the
database."""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from api.main import app
from core import jobs
from core.db import session_scope
from core.ids import new_id
from core.jobspec import JobSpec
from core.states import JobStatus, SweepStatus
from core.sweeps.spec import SweepSpec, check
from core.tables import Job, Sweep


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


def _sweep_with_trials(session, status: SweepStatus, trials: list[JobStatus]) -> None:
    """A sweep's row and a trial job per status, as core.sweeps would leave them."""
    stored = check(SweepSpec.model_validate({
        "name": "metrics", "base": {"model": "mlp", "dataset": "digits"}, "strategy": "grid",
        "space": {"hyperparameters.lr": {"grid": [0.1 * (n + 1) for n in range(len(trials))]}},
    }))[0].stored()  # a real sweep's spec: GET /sweeps of a later test reads every sweep
    sweep = Sweep(id=new_id(), name="metrics", status=status.value, strategy="grid",
                  metric="eval_accuracy", mode="max", max_trials=len(trials),
                  max_concurrent=len(trials), seed=0, spec=stored)
    session.add(sweep)
    spec = JobSpec(model="mlp", dataset="digits").resolved()
    for trial, trial_status in enumerate(trials):
        job = jobs.create_job(session, spec)
        job.status, job.sweep_id, job.trial, job.trial_values = (
            trial_status.value, sweep.id, trial, {"hyperparameters.lr": 0.1 * (trial + 1)})


def test_sweeps_and_their_trials_by_status_come_from_the_database(client):
    before = client.get("/metrics").text
    with session_scope() as session:
        _sweep_with_trials(session, SweepStatus.running,
                           [JobStatus.succeeded, JobStatus.running, JobStatus.queued])
        _sweep_with_trials(session, SweepStatus.cancelled, [JobStatus.cancelled])
        jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved())  # no sweep
    after = client.get("/metrics").text

    def added(name: str, status) -> float:
        labels = f'{{status="{status.value}"}}'
        return sample(after, name, labels) - sample(before, name, labels)

    assert {s: added("trainhub_sweeps", s) for s in SweepStatus} == {
        SweepStatus.running: 1, SweepStatus.succeeded: 0, SweepStatus.failed: 0,
        SweepStatus.cancelled: 1}
    assert {s: added("trainhub_sweep_trials", s) for s in JobStatus} == {
        JobStatus.queued: 1, JobStatus.running: 1, JobStatus.succeeded: 1,
        JobStatus.failed: 0, JobStatus.cancelled: 1, JobStatus.paused: 0, JobStatus.stopped: 0}
    # Trials are jobs: trainhub_jobs counts them and the job without a sweep.
    assert added("trainhub_jobs", JobStatus.queued) == 2
    with session_scope() as session:
        sweeps = session.query(Sweep).filter(Sweep.status == SweepStatus.running.value).count()
        trials = session.query(Job).filter(Job.sweep_id.is_not(None),
                                           Job.status == JobStatus.queued.value).count()
    assert sample(after, "trainhub_sweeps", '{status="running"}') == sweeps
    assert sample(after, "trainhub_sweep_trials", '{status="queued"}') == trials
    for name, kind, documentation in (("trainhub_sweeps", "gauge", "Sweeps by status"),
                                      ("trainhub_sweep_trials", "gauge",
                                       "Sweep trials (jobs with a sweep) by status")):
        assert f"# HELP {name} {documentation}\n# TYPE {name} {kind}\n" in after


def test_request_durations_are_labelled_by_route_template(client):
    client.get("/jobs/" + "0" * 32)  # a 404 on a templated route
    text = client.get("/metrics").text
    count = sample(text, "trainhub_request_duration_seconds_count",
                   '{method="GET",route="/jobs/{job_id}",status="404"}')
    assert count >= 1
    assert "0" * 32 not in text  # ids never become series
    assert "trainhub_predict_duration_seconds_bucket" in text
    assert "trainhub_event_streams" in text
