"""worker.runner.run in this process against the real Postgres and Redis (no Celery): a
short job end to end, and every delivery the runner must skip or fail."""
from __future__ import annotations

import hashlib

import pytest
import torch
from sqlalchemy import select

from core import events, jobs
from core.artifacts import checkpoint_key, get_store
from core.builtin_datasets import BUILTIN_DATASETS
from core.config import get_settings
from core.db import session_scope, upgrade_schema
from core.epochs import steps_per_epoch
from core.ids import new_id
from core.jobspec import JobSpec
from core.tables import Checkpoint, Job, MetricPoint
from worker.runner import run

WORKER = "test-worker"
HP = {"epochs": 1, "batch_size": 64, "log_every": 5}
EPOCH_METRICS = {"train_loss", "train_accuracy", "samples_per_second", "lr", "eval_loss",
                 "eval_accuracy"}


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def create_job(dataset: str = "digits", device: str = "cpu") -> str:
    """A queued job row as the API makes it (no message is sent: run() is called directly)."""
    spec = JobSpec(model="mlp", dataset=dataset, hyperparameters=HP, device=device).resolved()
    with session_scope() as session:
        job = jobs.create_job(session, spec)
        job.total_steps = steps_per_epoch(BUILTIN_DATASETS["digits"].train_size,
                                          HP["batch_size"], 0.0)
        return job.id


def load_job(job_id: str) -> Job:
    with session_scope() as session:
        return session.get(Job, job_id, populate_existing=True)


def points(job_id: str) -> list[MetricPoint]:
    with session_scope() as session:
        return list(session.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id)
                                    .order_by(MetricPoint.step, MetricPoint.name)))


def checkpoints(job_id: str) -> list[Checkpoint]:
    with session_scope() as session:
        return list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)))


def stream_events(job_id: str) -> list[dict]:
    client = events.connect(get_settings().redis_url)
    return events.stored_events(client, job_id)


def assert_never_ran(job_id: str) -> None:
    assert points(job_id) == [] and checkpoints(job_id) == []
    assert not get_store().exists(checkpoint_key(job_id, 1))


def test_a_short_job_runs_to_success_and_records_everything():
    job_id = create_job()
    per_epoch = load_job(job_id).total_steps

    assert run(job_id, WORKER) == "succeeded"

    job = load_job(job_id)
    assert job.status == "succeeded" and job.attempts == 1 and job.error is None
    assert job.worker == WORKER and job.device == "cpu"
    assert job.started_at is not None and job.finished_at >= job.started_at
    assert (job.epoch, job.step) == (1, per_epoch)
    assert 0.0 <= job.final_metrics["eval_accuracy"] <= 1.0
    assert set(job.final_metrics) == EPOCH_METRICS

    stored = points(job_id)
    loss_steps = [p.step for p in stored if p.name == "loss"]
    assert loss_steps == list(range(5, per_epoch + 1, 5))
    assert all(p.epoch == 1 and p.batch == p.step for p in stored if p.name == "loss")
    epoch_points = {p.name: p for p in stored if p.name != "loss"}
    assert set(epoch_points) == EPOCH_METRICS
    assert all(p.step == per_epoch and p.epoch == 1 for p in epoch_points.values())
    assert epoch_points["eval_accuracy"].value == pytest.approx(job.final_metrics["eval_accuracy"])

    [row] = checkpoints(job_id)
    assert (row.epoch, row.step) == (1, per_epoch)
    assert row.storage_key == checkpoint_key(job_id, 1)
    store = get_store()
    assert store.exists(row.storage_key)
    data = b"".join(store.iter_bytes(row.storage_key))
    assert len(data) == row.size_bytes and hashlib.sha256(data).hexdigest() == row.sha256
    with store.open(row.storage_key) as f:
        blob = torch.load(f, weights_only=True)
    assert blob["epoch"] == 1 and blob["classes"] == list(BUILTIN_DATASETS["digits"].classes)

    statuses = [e for e in stream_events(job_id) if e["type"] == "status"]
    assert [e["status"] for e in statuses] == ["running", "succeeded"]
    assert statuses[-1]["final_metrics"]["eval_accuracy"] == pytest.approx(
        job.final_metrics["eval_accuracy"])


def test_an_unknown_job_is_skipped():
    assert run(new_id(), WORKER) == "skipped"


def test_a_job_another_worker_claimed_is_skipped():
    job_id = create_job()
    with session_scope() as session:
        jobs.claim(session, job_id, "other-worker", "cpu", lease_seconds=60)

    assert run(job_id, WORKER) == "skipped"

    job = load_job(job_id)
    assert job.status == "running" and job.worker == "other-worker" and job.attempts == 1
    assert_never_ran(job_id)


def test_a_job_on_a_missing_uploaded_dataset_fails_with_the_reason():
    missing = new_id()
    job_id = create_job(dataset=missing)

    assert run(job_id, WORKER) == "failed"

    job = load_job(job_id)
    assert job.status == "failed" and job.attempts == 1 and job.finished_at is not None
    assert "unknown dataset" in job.error and missing in job.error
    assert job.final_metrics is None
    assert_never_ran(job_id)


def test_cuda_on_a_machine_without_cuda_fails_before_claiming(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # any machine is CPU-only
    job_id = create_job(device="cuda")

    assert run(job_id, WORKER) == "failed"

    job = load_job(job_id)
    assert job.status == "failed" and "no CUDA device" in job.error
    assert job.attempts == 0 and job.worker is None and job.started_at is None
    assert_never_ran(job_id)


def test_a_job_cancelled_while_queued_is_not_run():
    job_id = create_job()
    with session_scope() as session:
        assert jobs.request_cancel(session, job_id).status == "cancelled"

    assert run(job_id, WORKER) == "skipped"

    job = load_job(job_id)
    assert job.status == "cancelled" and job.attempts == 0 and job.started_at is None
    assert job.worker is None and job.error is None
    assert_never_ran(job_id)


def test_a_job_over_max_runtime_seconds_fails_with_the_reason_and_keeps_its_points():
    spec = JobSpec(model="mlp", dataset="digits", device="cpu", max_runtime_seconds=1,
                   hyperparameters={"epochs": 1000, "batch_size": 64, "log_every": 5}).resolved()
    with session_scope() as session:
        job = jobs.create_job(session, spec)
        job_id = job.id
    assert run(job_id, "test-worker") == "failed"
    job = load_job(job_id)
    assert "max_runtime_seconds" in job.error
    assert 0 < job.step < 1000 * 23 and points(job_id)  # it trained, and kept what it logged


def preempt_when(monkeypatch, logged=lambda points: True) -> None:
    """The runner's graceful stop, in process: set its StopFlag (what SIGTERM sets) once
    the reporter is handed points that `logged` accepts; monkeypatch.undo() ends it."""
    import worker.runner as runner
    from worker.control import StopFlag

    flags: list[StopFlag] = []

    class PreemptingFlag(StopFlag):
        def __init__(self):
            super().__init__()
            flags.append(self)

    monkeypatch.setattr(runner, "StopFlag", PreemptingFlag)
    original_metrics = runner.JobReporter.metrics

    def metrics(self, pts):
        original_metrics(self, pts)
        if logged(pts):
            flags[-1].set("preempt")

    monkeypatch.setattr(runner.JobReporter, "metrics", metrics)


def test_a_sigterm_hands_the_job_back_with_a_resume_checkpoint(monkeypatch):
    from core.artifacts import resume_key

    preempt_when(monkeypatch)
    job_id = create_job()
    assert run(job_id, "test-worker") == "queued"
    job = load_job(job_id)
    assert job.status == "queued" and job.graceful_stops == 1 and job.enqueued_at is None
    assert get_store().exists(resume_key(job_id))
    monkeypatch.undo()
    assert run(job_id, "test-worker") == "succeeded"
    job = load_job(job_id)
    assert job.attempts == 2 and job.resumed_from == {"epoch": 1, "step": job.resumed_from["step"]}
    assert job.resumed_from["step"] >= 5
    steps = [p.step for p in points(job_id) if p.name == "loss"]
    assert steps == sorted(set(steps))


def test_a_job_resumed_mid_epoch_shows_the_progress_it_was_handed_back_with(monkeypatch):
    """#20 finding 4 (the epoch went backwards on resume): the row's progress as the next
    attempt claims and resumes the job, and each progress it reports, start where the
    queued job stood, and never go back."""
    import worker.runner as runner

    preempt_when(monkeypatch)
    job_id = create_job()
    assert run(job_id, WORKER) == "queued"
    monkeypatch.undo()
    queued = load_job(job_id)
    assert queued.epoch == 1 and 0 < queued.step < queued.total_steps  # mid-epoch
    resumed_with, shown = [], []
    set_resumed_from, progress = jobs.set_resumed_from, runner.JobReporter.progress

    def recording_set_resumed_from(session, job_id_, attempt, epoch, step, progress_epoch):
        resumed_with.append((progress_epoch, step))
        set_resumed_from(session, job_id_, attempt, epoch, step, progress_epoch)

    def recording_progress(self, epoch, step, total_steps):
        shown.append((epoch, step))
        progress(self, epoch, step, total_steps)

    monkeypatch.setattr(jobs, "set_resumed_from", recording_set_resumed_from)
    monkeypatch.setattr(runner.JobReporter, "progress", recording_progress)
    assert run(job_id, WORKER) == "succeeded"
    assert resumed_with == [(queued.epoch, queued.step)]
    assert shown[0] == (queued.epoch, queued.step)
    assert [e for e, _ in shown] == sorted(e for e, _ in shown)
    assert [s for _, s in shown] == sorted(s for _, s in shown)


def test_a_cancel_requested_while_the_job_is_handed_back_ends_it_cancelled(monkeypatch):
    from core.artifacts import resume_key

    job_id = create_job()

    def cancel_then_preempt(pts) -> bool:
        with session_scope() as session:  # the user's cancel lands just as SIGTERM does
            jobs.request_cancel(session, job_id)
        return True

    preempt_when(monkeypatch, cancel_then_preempt)
    assert run(job_id, "test-worker") == "cancelled"
    monkeypatch.undo()
    job = load_job(job_id)
    assert job.status == "cancelled" and job.attempts == 1 and job.error is None
    assert get_store().exists(resume_key(job_id))  # what it trained is kept
    assert run(job_id, "test-worker") == "skipped"  # a stray message runs nothing
    assert load_job(job_id).attempts == 1
    assert [e["status"] for e in stream_events(job_id) if e["type"] == "status"][-1] == \
        "cancelled"


def test_a_cancel_reaches_a_loop_whose_epochs_are_shorter_than_the_check(monkeypatch):
    """No loss point (log_every past the epoch) and epochs far shorter than the check
    interval: the reporter's own poll of the cancel flag stops it."""
    import time

    monkeypatch.setenv("TRAINHUB_CANCEL_CHECK_SECONDS", "0.5")
    get_settings.cache_clear()
    spec = JobSpec(model="mlp", dataset="digits", device="cpu", hyperparameters={
        "epochs": 1000, "batch_size": 64, "log_every": 2000}).resolved()
    with session_scope() as session:
        job_id = jobs.create_job(session, spec).id
    cancelled_at = []

    def cancel_later():
        time.sleep(1.5)
        with session_scope() as session:
            jobs.request_cancel(session, job_id)
        cancelled_at.append(time.monotonic())

    import threading
    threading.Thread(target=cancel_later, daemon=True).start()
    try:
        assert run(job_id, "test-worker") == "cancelled"
        took = time.monotonic() - cancelled_at[0]
    finally:
        get_settings.cache_clear()
    job = load_job(job_id)
    assert job.status == "cancelled" and 0 < job.epoch < 1000
    assert took < 0.5 + 1.0, took
