"""A job's own log lines: every record logged while the job runs in this process (its
claim, data, epochs, warnings, the error with its cause) carries the job's id, and the
ones of INFO and up are kept for the reporter to store (GET /jobs/{id}/logs)."""
from __future__ import annotations

import contextvars
import logging
import threading
import traceback
from contextlib import contextmanager
from typing import Iterator

from core.tables import utcnow

CURRENT_JOB: contextvars.ContextVar[str] = contextvars.ContextVar("trainhub_job", default="-")
_MAX_MESSAGE = 20_000


def _install_record_factory() -> None:
    """Every LogRecord gets `job_id` (the running job's, or "-"), for log formats to show.

    A message that names the running job in front ("job <id>: ...", as one must that may be
    logged outside the job's run: the reaper, before a claim) loses that name, which the
    format (` job=<id>`) and the job's own log already carry: the id once per line."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "trainhub_job_id", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        record.job_id = CURRENT_JOB.get()
        if (record.job_id != "-" and isinstance(record.msg, str)
                and record.msg.startswith("job ")):
            try:
                message, named = record.getMessage(), f"job {record.job_id}: "
            except Exception:  # arguments that do not fit: logging reports it as it emits
                return record
            if message.startswith(named):
                record.msg, record.args = message[len(named):], ()
        return record

    factory.trainhub_job_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_install_record_factory()


class JobLogCapture(logging.Handler):
    """Buffers this job's records (INFO and up) as rows for the job_logs table."""

    def __init__(self, job_id: str, attempt: int):
        super().__init__(logging.INFO)
        self.job_id, self.attempt = job_id, attempt
        self._lines: list[dict] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "job_id", None) != self.job_id:
            return  # another thread's or Celery's own record
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        line = {"time": utcnow(), "level": record.levelname, "attempt": self.attempt,
                "source": record.name[:100], "message": message[:_MAX_MESSAGE]}
        with self._guard:
            self._lines.append(line)

    def take(self) -> list[dict]:
        with self._guard:
            lines, self._lines = self._lines, []
        return lines

    def give_back(self, lines: list[dict]) -> None:
        """Lines that could not be stored yet go back in front, in order."""
        with self._guard:
            self._lines[:0] = lines


@contextmanager
def job_logging(job_id: str, attempt: int) -> Iterator[JobLogCapture]:
    capture = JobLogCapture(job_id, attempt)
    token = CURRENT_JOB.set(job_id)
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        CURRENT_JOB.reset(token)
