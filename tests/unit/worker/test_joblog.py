"""A worker's log line names its job once: the terminal's format tags every record logged
while a job runs (` job=<id>`), so a message that names that job in front loses the name,
in the terminal and in the job's own log (GET /jobs/{id}/logs) alike."""
from __future__ import annotations

import io
import logging

import pytest

from cli.server import LOG_FORMAT, JobTag
from worker.joblog import job_logging

JOB = "3f2c" + "a" * 28
OTHER = "8c7a" + "b" * 28


@pytest.fixture
def terminal():
    """The worker's terminal: the root logger's handler as `trainhub worker` sets it up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(JobTag())
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous_level)


def test_a_line_logged_while_the_job_runs_carries_its_id_once(terminal):
    log = logging.getLogger("worker.runner")
    with job_logging(JOB, attempt=1) as capture:
        log.info("job %s: attempt %d claimed by %s on device %s", JOB, 1, "w1@host", "cpu")
        log.info("job %s: succeeded", JOB)
        stored = [line["message"] for line in capture.take()]
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 2
    assert all(line.count(JOB) == 1 for line in lines), lines
    assert lines[0].endswith(f"worker.runner job={JOB}: attempt 1 claimed by w1@host on device cpu")
    assert lines[1].endswith(f"worker.runner job={JOB}: succeeded")
    assert stored == ["attempt 1 claimed by w1@host on device cpu", "succeeded"]


def test_outside_a_run_or_about_another_job_the_message_keeps_the_id(terminal):
    log = logging.getLogger("worker.reaper")
    log.info("job %s: requeued after its lease expired", JOB)  # the reaper: no job runs
    with job_logging(JOB, attempt=2):
        log.info("job %s: could not send it to the broker", OTHER)
    first, second = terminal.getvalue().splitlines()
    assert first.endswith(f"worker.reaper: job {JOB}: requeued after its lease expired")
    assert second.endswith(f"worker.reaper job={JOB}: job {OTHER}: could not send it to the "
                           "broker")


def test_a_message_whose_arguments_do_not_fit_still_reaches_logging(terminal):
    with job_logging(JOB, attempt=1):
        record = logging.getLogger("x").makeRecord("x", logging.INFO, __file__, 1,
                                                   "job %s: %d", (JOB, "not a number"), None)
    assert record.msg == "job %s: %d" and record.job_id == JOB
