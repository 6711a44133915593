"""`trainhub logs JOB [-f]` against a real API: the job's lines, oldest first; -f follows
until the job ends."""
from __future__ import annotations

import threading
import time

from sqlalchemy import insert

from core import jobs
from core.db import session_scope
from core.jobspec import JobSpec
from core.states import JobStatus
from core.tables import JobLog, utcnow
from tests.integration.cli.conftest import assert_one_error_line


def new_job() -> str:
    with session_scope() as session:
        return jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved()).id


def add_lines(job_id: str, *messages: str) -> None:
    with session_scope() as session:
        session.execute(insert(JobLog), [{"job_id": job_id, "time": utcnow(), "level": "INFO",
                                          "attempt": 1, "source": "worker.runner",
                                          "message": m} for m in messages])


def test_logs_prints_the_lines_oldest_first(cli):
    job_id = new_job()
    add_lines(job_id, "claimed by w1 on cpu", "[1,   100] loss: 2.084")
    run = cli("logs", job_id)
    assert run.exit_code == 0, run.stderr
    assert len(run.lines) == 2
    assert run.lines[0].endswith("INFO    claimed by w1 on cpu")
    assert run.lines[1].endswith("[1,   100] loss: 2.084")


def test_logs_follow_prints_new_lines_until_the_job_ends(cli):
    job_id = new_job()
    with session_scope() as session:
        jobs.claim(session, job_id, "w1@test", "cpu", 60)
    add_lines(job_id, "first")

    def worker():
        time.sleep(1.5)
        add_lines(job_id, "second")
        time.sleep(1.0)
        add_lines(job_id, "succeeded")
        with session_scope() as session:
            jobs.transition(session, job_id, JobStatus.succeeded)

    thread = threading.Thread(target=worker)
    thread.start()
    run = cli("logs", job_id, "-f")
    thread.join()
    assert run.exit_code == 0, run.stderr
    assert [line.rsplit(" ", 1)[-1] for line in run.lines] == ["first", "second", "succeeded"]


def test_logs_of_an_unknown_job_is_one_error_line(cli):
    assert_one_error_line(cli("logs", "0" * 32))
