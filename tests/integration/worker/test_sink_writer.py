"""The reporter's background writer against the real Postgres: COPY + INSERT ... SELECT
stores each (job, name, step) once and every point in the order handed over; flush()
returns only after the commit; a database that does not answer never blocks metrics()."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, text

from core import events, jobs
from core.config import get_settings
from core.db import get_engine, session_scope, upgrade_schema
from core.jobspec import JobSpec
from core.tables import MetricPoint
from worker.reporting import Metric
from worker.sink import JobReporter

pytestmark = pytest.mark.skipif(not get_settings().resolved_database_url.startswith(
    "postgresql"), reason="the COPY path is Postgres'")


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


@pytest.fixture
def job_id():
    with session_scope() as session:
        return jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved()).id


def rows(job_id: str) -> list[tuple[int, str, int, float]]:
    with session_scope() as session:
        return [tuple(r) for r in session.execute(
            select(MetricPoint.id, MetricPoint.name, MetricPoint.step, MetricPoint.value)
            .where(MetricPoint.job_id == job_id).order_by(MetricPoint.id))]


def test_duplicates_are_stored_once_and_the_first_is_kept(job_id):
    reporter = JobReporter(job_id, get_settings(), None, flush_every_s=3600)
    reporter.metrics([Metric("loss", 1, s, s, float(s)) for s in range(10)])
    reporter.metrics([Metric("loss", 1, 3, 3, -1.0), Metric("acc", 1, 3, 3, 0.5),
                      Metric("acc", 1, 3, 3, -2.0)])  # one of the batch, one stored before
    reporter.flush()
    reporter.metrics([Metric("loss", 1, s, s, -float(s)) for s in range(5, 15)])  # replay
    reporter.flush()
    reporter.close()
    stored = [(n, s, v) for _, n, s, v in rows(job_id)]
    assert stored == ([("loss", s, float(s)) for s in range(10)] + [("acc", 3, 0.5)]
                      + [("loss", s, -float(s)) for s in range(10, 15)])


def test_every_point_is_stored_in_the_order_handed_over(job_id):
    reporter = JobReporter(job_id, get_settings(), events.connect(get_settings().redis_url),
                           max_buffer=100)
    try:
        names = ("loss", "lr", "samples_per_second")
        for step in range(1, 6001):  # the writer thread writes while these come in
            reporter.metrics([Metric(names[step % 3], 1, step, step, 1.0 / step)])
        reporter.flush()
        stored = rows(job_id)
        assert [(n, s) for _, n, s, _ in stored] == [(names[s % 3], s) for s in range(1, 6001)]
        assert [i for i, *_ in stored] == sorted(i for i, *_ in stored)
        client = events.connect(get_settings().redis_url)
        published = events.stored_events(client, job_id)
        assert [(e["name"], e["step"]) for e in published if e["type"] == "metric"] == [
            (names[s % 3], s) for s in range(1, 6001)]
    finally:
        reporter.close()
        events.connect(get_settings().redis_url).delete(events.stream_key(job_id))


def test_flush_returns_after_the_commit_and_close_ends_the_thread(job_id):
    reporter = JobReporter(job_id, get_settings(), None, flush_every_s=3600)
    reporter.metrics([Metric("loss", 1, s, s, 0.5) for s in range(1, 2001)])
    reporter.flush()
    assert len(rows(job_id)) == 2000  # another connection sees them all: committed
    thread = reporter._thread
    assert thread is not None and thread.is_alive()  # 2000 >= max_buffer woke it
    reporter.close()
    assert not thread.is_alive()


def test_a_blocked_database_does_not_block_metrics(job_id):
    """The test holds a lock that stops every INSERT into metric_points: the writer waits,
    the loop's metrics() and progress() calls return at once, and nothing is lost."""
    reporter = JobReporter(job_id, get_settings(), None, max_buffer=50, flush_every_s=0.05)
    locked = get_engine().connect()
    tx = locked.begin()
    locked.execute(text("LOCK TABLE metric_points IN SHARE MODE"))
    try:
        slowest = 0.0
        for step in range(1, 3001):
            started = time.perf_counter()
            reporter.metrics([Metric("loss", 1, step, step, 1.0)])
            if step % 100 == 0:
                reporter.progress(1, step, 3000)
                assert reporter.should_stop() is False
            slowest = max(slowest, time.perf_counter() - started)
        time.sleep(0.5)
        waiting = locked.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO metric_points%'")).scalar()
        assert waiting >= 1  # the writer is stuck behind our lock ...
        assert rows(job_id) == []
        assert slowest < 1.0, slowest  # ... and the loop never waited for it (seconds)
    finally:
        tx.rollback()
        locked.close()
    reporter.flush()
    reporter.close()
    assert [s for _, _, s, _ in rows(job_id)] == list(range(1, 3001))


def test_a_full_queue_waits_for_the_writer_and_loses_nothing(job_id):
    reporter = JobReporter(job_id, get_settings(), None, max_buffer=10, max_queue=200)
    done = threading.Event()

    def produce():
        for step in range(1, 5001):
            reporter.metrics([Metric("loss", 1, step, step, 1.0)])
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(timeout=60)
    assert done.is_set()
    assert len(reporter.buffer) <= 200 + 1
    reporter.flush()
    reporter.close()
    assert [s for _, _, s, _ in rows(job_id)] == list(range(1, 5001))
