"""Leases, fencing, requeues and the reaper (core/jobs.py, worker/reaper.py) on the real
Postgres, with the clock moved by writing lease times directly."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from core import jobs
from core.config import get_settings
from core.db import session_scope, upgrade_schema
from core.jobspec import JobSpec
from core.states import InvalidTransition, JobStatus
from core.tables import Job, utcnow
from worker.reaper import reap_once


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def new_job(max_attempts: int = 4, device: str = "auto") -> str:
    with session_scope() as session:
        spec = JobSpec(model="mlp", dataset="digits", device=device).resolved()
        return jobs.create_job(session, spec, max_attempts=max_attempts).id


def claim(job_id: str, worker: str = "w@test") -> int:
    with session_scope() as session:
        return jobs.claim(session, job_id, worker, "cpu", lease_seconds=60).attempts


def expire(job_id: str) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            lease_expires_at=utcnow() - timedelta(seconds=1)))


def row(job_id: str) -> Job:
    with session_scope() as session:
        return session.get(Job, job_id, populate_existing=True)


def reap() -> jobs.Reaped:
    with session_scope() as session:
        return jobs.reap(session, enqueue_grace_seconds=0)


def test_a_lease_is_renewed_only_by_the_attempt_that_holds_it():
    job_id = new_job()
    first = claim(job_id)
    with session_scope() as session:
        assert jobs.renew_lease(session, job_id, first, 60)
        assert not jobs.renew_lease(session, job_id, first + 1, 60)
    expire(job_id)
    assert job_id in reap().requeued
    second = claim(job_id, "w2@test")
    assert second == first + 1
    with session_scope() as session:  # the old attempt is fenced off everywhere
        assert not jobs.renew_lease(session, job_id, first, 60)
        assert not jobs.record_progress(session, job_id, 1, 10, 100, 60, attempt=first)
    with pytest.raises(InvalidTransition), session_scope() as session:
        jobs.transition(session, job_id, JobStatus.succeeded, attempt=first)
    with session_scope() as session:
        jobs.transition(session, job_id, JobStatus.succeeded, attempt=second)
    assert row(job_id).status == "succeeded"


def test_the_reaper_requeues_expired_jobs_until_max_attempts_then_fails_them():
    job_id = new_job(max_attempts=2)
    for attempt in (1, 2):
        assert claim(job_id) == attempt
        expire(job_id)
        outcome = reap()
        if attempt == 1:
            assert job_id in outcome.requeued
            job = row(job_id)
            assert job.status == "queued" and job.worker is None and job.enqueued_at is None
            assert job.lease_expires_at is None
        else:
            assert job_id in outcome.failed
    job = row(job_id)
    assert job.status == "failed" and "lost 2 times" in job.error and job.attempts == 2


def test_a_graceful_requeue_does_not_use_up_an_attempt():
    job_id = new_job(max_attempts=1)
    attempt = claim(job_id)
    with session_scope() as session:
        jobs.requeue(session, job_id, attempt, graceful=True, reason="shutting down")
    job = row(job_id)
    assert job.status == "queued" and job.graceful_stops == 1
    claim(job_id)
    expire(job_id)
    # Two claims, one of them after a graceful stop: one lost attempt, not two.
    assert job_id in reap().failed
    assert "lost 1 times" in row(job_id).error


def test_a_live_lease_and_a_finished_job_are_left_alone():
    live, done = new_job(), new_job()
    claim(live)
    claim(done)
    with session_scope() as session:
        jobs.transition(session, done, JobStatus.succeeded)
    outcome = reap()
    assert live not in outcome.requeued + outcome.failed
    assert done not in outcome.requeued + outcome.failed
    assert row(live).status == "running" and row(done).status == "succeeded"


def test_a_queued_job_with_no_sent_message_is_resent_after_the_grace_period():
    sent, unsent = new_job(), new_job()
    with session_scope() as session:
        jobs.mark_enqueued(session, sent)
    with session_scope() as session:  # within the grace period: not yet
        assert unsent not in jobs.reap(session, enqueue_grace_seconds=3600).unsent
    outcome = reap()
    assert unsent in outcome.unsent and sent not in outcome.unsent


def test_reap_once_sends_and_records_the_messages(monkeypatch):
    sent: dict[str, str] = {}
    monkeypatch.setattr("worker.reaper.enqueue",
                        lambda task, job_id, queue: sent.update({job_id: queue}))
    settings = get_settings().model_copy(update={"enqueue_grace_seconds": 0})
    expired, unsent = new_job(), new_job(device="cuda")
    claim(expired)
    expire(expired)
    outcome = reap_once(settings)
    assert expired in outcome.requeued and unsent in outcome.unsent
    # Each to its device's queue, as the API sent it first.
    assert sent[expired] == settings.queue and sent[unsent] == f"{settings.queue}.gpu"
    assert row(expired).enqueued_at is not None and row(unsent).enqueued_at is not None
    assert expired not in reap().unsent  # recorded: not sent again


def test_a_broker_failure_leaves_the_job_to_the_next_pass(monkeypatch):
    def down(task, job_id, queue):
        raise ConnectionError("broker down")

    monkeypatch.setattr("worker.reaper.enqueue", down)
    job_id = new_job()
    reap_once(get_settings().model_copy(update={"enqueue_grace_seconds": 0}))
    assert row(job_id).enqueued_at is None


def test_cancel_of_a_running_job_whose_worker_is_gone_ends_it_at_once():
    job_id = new_job()
    claim(job_id)
    with session_scope() as session:  # a live worker: only flagged
        job = jobs.request_cancel(session, job_id)
        assert job.status == "running" and job.cancel_requested
    expire(job_id)
    with session_scope() as session:
        job = jobs.request_cancel(session, job_id)
    assert job.status == "cancelled" and job.finished_at is not None


def test_claim_is_idempotent_for_duplicate_messages():
    job_id = new_job()
    claim(job_id)
    with pytest.raises(InvalidTransition), session_scope() as session:
        jobs.claim(session, job_id, f"w-{uuid.uuid4().hex[:4]}@test", "cpu", 60)
    assert row(job_id).attempts == 1


def request_cancel(job_id: str) -> Job:
    with session_scope() as session:
        return jobs.request_cancel(session, job_id)


def test_a_job_handed_back_after_its_cancel_was_requested_ends_cancelled():
    job_id = new_job()
    attempt = claim(job_id)
    assert request_cancel(job_id).status == "running"  # flagged for its loop
    with session_scope() as session:
        job = jobs.requeue(session, job_id, attempt, graceful=True, reason="test",
                           final_metrics={"eval_accuracy": 0.5})
    assert job.status == "cancelled"
    stored = row(job_id)
    assert stored.status == "cancelled" and stored.final_metrics == {"eval_accuracy": 0.5}
    assert stored.finished_at is not None and stored.lease_expires_at is None
    with pytest.raises(InvalidTransition):
        claim(job_id)  # never run again


def test_a_queued_job_whose_cancel_was_requested_is_cancelled_when_claimed():
    job_id = new_job()
    claim(job_id)
    with session_scope() as session:  # the race: the flag lands between the check and
        session.execute(update(Job).where(Job.id == job_id)  # the hand-back's update
                        .values(status="queued", cancel_requested=True))
    with pytest.raises(InvalidTransition) as refused:
        claim(job_id, "w2@test")
    assert refused.value.current is JobStatus.cancelled
    assert row(job_id).status == "cancelled" and row(job_id).attempts == 1


def test_the_reaper_cancels_a_lost_job_whose_cancel_was_requested():
    job_id, spent = new_job(), new_job(max_attempts=1)
    for each in (job_id, spent):
        claim(each)
        request_cancel(each)
        expire(each)
    outcome = reap()
    assert {job_id, spent} <= set(outcome.cancelled)
    assert job_id not in outcome.requeued and spent not in outcome.failed
    assert row(job_id).status == row(spent).status == "cancelled"
