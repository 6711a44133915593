"""The job state machine on the real Postgres; migrations racing (metric writes:
tests/integration/core/test_metrics_store.py)."""
from __future__ import annotations

import subprocess
import sys
import threading

import psycopg
import pytest

from core import jobs
from core.db import session_scope, upgrade_schema
from core.jobspec import JobSpec
from core.states import InvalidTransition, JobStatus
from tests.conftest import create_database
from tests.procs import REPO, env_with


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def new_job() -> str:
    with session_scope() as session:
        job = jobs.create_job(session, JobSpec(model="lenet", dataset="digits").resolved())
        return job.id


def status_of(job_id: str) -> str:
    with session_scope() as session:
        return session.get(jobs.Job, job_id, populate_existing=True).status


def test_happy_path_and_no_leaving_terminal_states():
    job_id = new_job()
    with session_scope() as s:
        job = jobs.claim(s, job_id, "w@test", "cpu", lease_seconds=60)
        assert job.status == "running" and job.attempts == 1 and job.lease_expires_at
    with session_scope() as s:
        job = jobs.transition(s, job_id, JobStatus.succeeded, final_metrics={"eval_accuracy": 1.0})
        assert job.finished_at is not None and job.lease_expires_at is None
    for target in JobStatus:
        with pytest.raises(InvalidTransition) as exc, session_scope() as s:
            jobs.transition(s, job_id, target)
        assert exc.value.current is JobStatus.succeeded
    assert status_of(job_id) == "succeeded"


def test_cancelled_queued_job_cannot_be_claimed():
    job_id = new_job()
    with session_scope() as s:
        assert jobs.request_cancel(s, job_id).status == "cancelled"
    with pytest.raises(InvalidTransition), session_scope() as s:
        jobs.claim(s, job_id, "w@test", "cpu", lease_seconds=60)
    assert status_of(job_id) == "cancelled"


def test_cancel_of_running_job_is_a_flag_the_loop_reads():
    job_id = new_job()
    with session_scope() as s:
        jobs.claim(s, job_id, "w@test", "cpu", lease_seconds=60)
    with session_scope() as s:
        assert not jobs.cancel_requested(s, job_id)
        job = jobs.request_cancel(s, job_id)
        assert job.status == "running" and job.cancel_requested
    with session_scope() as s:
        assert jobs.cancel_requested(s, job_id)
        jobs.transition(s, job_id, JobStatus.cancelled)
    with pytest.raises(InvalidTransition), session_scope() as s:
        jobs.request_cancel(s, job_id)


def test_queued_cannot_jump_to_succeeded():
    job_id = new_job()
    with pytest.raises(InvalidTransition), session_scope() as s:
        jobs.transition(s, job_id, JobStatus.succeeded)
    assert status_of(job_id) == "queued"


def test_two_workers_racing_for_one_job_exactly_one_wins():
    job_id = new_job()
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            with session_scope() as s:
                jobs.claim(s, job_id, f"w{i}@test", "cpu", lease_seconds=60)
            outcomes.append("won")
        except InvalidTransition:
            outcomes.append("lost")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]


def test_many_processes_migrate_an_empty_database_at_once():
    url = create_database("trainhub_migrate")
    env = env_with(TRAINHUB_DATABASE_URL=url)
    procs = [subprocess.Popen([sys.executable, "-m", "cli", "migrate"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"jobs", "metric_points", "checkpoints", "datasets", "alembic_version"} <= tables
    assert version == [(head_revision(),)]


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from core.db import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


def test_sqlite_schema_matches_postgres(tmp_path):
    """The same migration on SQLite gives the same tables and columns."""
    db = tmp_path / "t.db"
    env = env_with(TRAINHUB_DATABASE_URL=f"sqlite:///{db}", TRAINHUB_DATA_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-m", "cli", "migrate"], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)
    import sqlite3

    with sqlite3.connect(db) as conn:
        sqlite_cols = {(t, c[1]) for t in ("jobs", "metric_points", "checkpoints", "datasets")
                       for c in conn.execute(f"PRAGMA table_info({t})")}
    from sqlalchemy import inspect

    from core.db import get_engine

    insp = inspect(get_engine())
    pg_cols = {(t, c["name"]) for t in ("jobs", "metric_points", "checkpoints", "datasets")
               for c in insp.get_columns(t)}
    assert sqlite_cols == pg_cols
