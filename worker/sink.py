"""The loop's Reporter for a real job: a background writer of batched rows in the database
(points, progress, log lines, epoch checkpoint rows) and of events on Redis.

The database is the truth. While it is unreachable the reporter keeps what it was handed
and retries with backoff, so training goes on; past `database_outage_seconds` it tells the
loop to stop (the runner then saves a resume checkpoint that carries the unwritten points).
Redis is best effort (worker.live_events): an outage costs live events, never data.

Off the training thread: metrics(), progress() and should_stop() only hand over and wake a
background writer thread (started lazily, in the process that uses the reporter), which
writes whatever has accumulated in one transaction (the points by one COPY:
core.metrics.store.insert_points) and one Redis pipeline. The queue is bounded by
`max_queue`: past it metrics() waits for the writer (back-pressure, never a lost point)
unless the database is down, when points buffer up to `max_pending` and should_stop() then
says "db_outage". flush() writes on the caller's thread and returns once everything handed
over before it is committed.
"""
from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from dataclasses import asdict
from typing import Sequence

from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError

from core import events, jobs
from core.config import Settings
from core.db import is_outage, session_scope
from core.metrics import store as metric_store
from core.tables import JobLog
from worker.checkpoint_rows import apply_retention, store_checkpoint_row
from worker.control import StopFlag
from worker.joblog import JobLogCapture
from worker.live_events import EventPublisher, stored_point_events
from worker.reporting import Metric

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 30.0


class DatabaseOutage(Exception):
    """The database stayed unreachable for longer than database_outage_seconds."""


class JobReporter:
    """Hands points to a background writer: one COPY (and one Redis pipeline) per batch.

    attempt: writes count only while this attempt holds the job; spec: the job's (checkpoint
    retention needs it); stop: set once the job is lost (cancelled, or its lease); log_capture:
    the job's log lines, stored with each write."""

    def __init__(self, job_id: str, settings: Settings, redis_client=None,
                 flush_every_s: float = 0.5, max_buffer: int = 500, attempt: int | None = None,
                 spec: dict | None = None, max_pending: int = 1_000_000,
                 max_queue: int = 200_000, stop: StopFlag | None = None,
                 log_capture: JobLogCapture | None = None):
        self.job_id = job_id
        self.settings = settings
        self.events = EventPublisher(redis_client, job_id)
        self.flush_every_s = flush_every_s
        self.max_buffer = max_buffer  # this many waiting points wake the writer early
        self.attempt = attempt  # fencing
        self.spec = spec
        self.max_pending = max_pending
        self.max_queue = max_queue
        self.buffer: list[Metric] = []
        self.progress_due: tuple[int, int, int] | None = None
        self.checkpoint_rows: list[dict] = []
        self.last_flush = 0.0
        self.outage_since: float | None = None
        self.retry_at = 0.0
        self.backoff = 1.0
        self.lost: str | None = None  # "cancel" or "lease_lost" once the row says so
        # Set as soon as `lost` is: the loop reads it after every mini-batch, so a cancel
        # lands within one poll (cancel_check_seconds) and a step of its request.
        self.stop = stop
        self._cancel_read_at = 0.0
        self.written_up_to: int | None = None  # row id of this job's newest stored point
        self.log_capture = log_capture
        # The background writer: _cond guards the handed-over state and wakes the thread;
        # _write_lock lets one write at a time (the thread's, or flush()'s on the caller's).
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._thread_pid: int | None = None
        self._wake = False
        self._closing = False
        self._check_cancel = False
        self._error: BaseException | None = None  # a writer failure, raised to the loop

    # ---- the Reporter protocol -----------------------------------------------------------

    def metrics(self, points: Sequence[Metric]) -> None:
        self.raise_writer_error()
        with self._cond:
            self.buffer.extend(points)
            if len(self.buffer) >= self.max_buffer:
                self._wake_writer()
            # Back-pressure, never a lost point: a full queue waits for the writer, except
            # during an outage (then should_stop() ends the job past max_pending).
            while (len(self.buffer) >= self.max_queue and self.outage_since is None
                   and self._error is None and not self._closing):
                self._wake_writer()
                self._cond.wait(timeout=0.1)
        self.raise_writer_error()

    def progress(self, epoch: int, step: int, total_steps: int) -> None:
        self.raise_writer_error()
        with self._cond:
            self.progress_due = (epoch, step, total_steps)
            self._wake_writer()

    def should_stop(self) -> bool | str:
        """Never waits on the database: the writer thread stores what is due and then reads
        the cancel flag; the answer is what it has found so far."""
        self.raise_writer_error()
        with self._cond:
            self._check_cancel = True
            self._wake_writer()
        if self.lost is not None:
            return self.lost
        if self.outage_since is not None and (
                time.monotonic() - self.outage_since > self.settings.database_outage_seconds
                or len(self.buffer) > self.max_pending):
            # One last try before giving the job up: the database may be back while the
            # backoff (up to 30 s) has not let us see it yet.
            if not self.try_flush(force=True):
                return "db_outage"
            return self.lost or False
        return False

    # ---- more for the runner -------------------------------------------------------------

    def record_checkpoint(self, row: dict) -> None:
        """An epoch checkpoint's row, stored (and retention applied) with the next write."""
        with self._cond:
            self.checkpoint_rows.append(row)
            self._wake_writer()

    def pending_points(self) -> list[dict]:
        with self._cond:
            return [asdict(p) for p in self.buffer]

    def close(self) -> None:
        """Stop the writer thread (what is still buffered stays for flush()/try_flush())."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() \
                and self._thread_pid == os.getpid():
            thread.join(timeout=10)
        self._thread = None

    def try_flush(self, force: bool = False) -> bool:
        """Write what is buffered if the database answers; False (and keep it all) if not.
        During an outage it tries only when the backoff allows, or when forced. Runs on the
        caller's thread (after any write the writer thread has under way)."""
        with self._write_lock:
            self.last_flush = time.monotonic()
            if (self.outage_since is not None and time.monotonic() < self.retry_at
                    and not force):
                return False
            try:
                self._write()
            except DBAPIError as exc:
                if not is_outage(exc):
                    raise
                self._outage(exc)
                return False
            finally:
                with self._cond:
                    self._cond.notify_all()  # a metrics() waiting on a full queue
            if self.outage_since is not None:
                log.info("job %s: database back after %.1fs; buffered points written",
                         self.job_id, time.monotonic() - self.outage_since)
                self.outage_since = None
            return True

    def _outage(self, exc: DBAPIError) -> None:
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since, self.backoff = now, 1.0
            log.warning("job %s: database unreachable; buffering %d point(s) and "
                        "training on: %s", self.job_id, len(self.buffer),
                        str(exc).splitlines()[0][:200])
        self.retry_at = now + self.backoff
        self.backoff = min(self.backoff * 2, _BACKOFF_MAX_S)

    def flush(self) -> None:
        """Return when everything handed over is committed; DatabaseOutage if the database
        stays unreachable for database_outage_seconds."""
        self.raise_writer_error()
        deadline = time.monotonic() + self.settings.database_outage_seconds
        while not self.try_flush():
            if time.monotonic() > deadline:
                if self.try_flush(force=True):  # the backoff may hide that it is back
                    return
                raise DatabaseOutage(f"the database was unreachable for more than "
                                     f"{self.settings.database_outage_seconds:g}s")
            time.sleep(max(0.05, min(self.retry_at - time.monotonic(), 1.0)))

    # ---- the writer thread ---------------------------------------------------------------

    def _wake_writer(self) -> None:
        """With _cond held: start the thread if this process has none yet, and wake it."""
        if self._closing:
            return
        if self._thread is None or self._thread_pid != os.getpid():
            self._thread_pid = os.getpid()  # a fork copies no thread: start our own
            # In this context: its log records carry the job's id (the job's log keeps them).
            self._thread = threading.Thread(target=contextvars.copy_context().run,
                                            args=(self._writer_loop,), daemon=True,
                                            name=f"metrics-{self.job_id[:8]}")
            self._thread.start()
        self._wake = True
        self._cond.notify_all()

    def _writer_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wake or self._closing,
                                    timeout=min(self.flush_every_s,
                                                self.settings.cancel_check_seconds))
                self._wake = False
                if self._closing:
                    return
                check_cancel, self._check_cancel = self._check_cancel, False
            # Asked (should_stop), or on its own every cancel_check_seconds: a loop whose
            # epochs and log intervals are short asks rarely, or never between epochs.
            check_cancel = check_cancel or (time.monotonic() - self._cancel_read_at
                                            >= self.settings.cancel_check_seconds)
            try:
                written = self.try_flush()
                if written and check_cancel and self.lost is None:
                    self._cancel_read_at = time.monotonic()
                    self._read_cancel()
            except BaseException as exc:  # a statement the database rejected: the loop's
                log.exception("job %s: the metric writer failed", self.job_id)
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return

    def _read_cancel(self) -> None:
        try:
            with session_scope() as session:
                if jobs.cancel_requested(session, self.job_id):
                    self._lose("cancel")
        except DBAPIError as exc:
            # The database can go down between the write and this read: that is an
            # outage like any other (buffer and train on), not a reason to fail the job.
            if not is_outage(exc):
                raise
            with self._write_lock:
                self._outage(exc)

    def _lose(self, reason: str) -> None:
        """The job is no longer this attempt's to train: cancelled, or its lease lost."""
        self.lost = self.lost or reason
        if self.stop is not None:
            self.stop.set(self.lost)

    def raise_writer_error(self) -> None:
        """What the writer thread hit (a statement the database rejected), raised here."""
        if self._error is not None:
            exc, self._error = self._error, None
            with self._cond:
                self._thread = None  # it has ended: the next hand-over starts another
            raise exc

    # ---- writing -------------------------------------------------------------------------

    def _write(self) -> None:
        lines = self.log_capture.take() if self.log_capture is not None else []
        try:
            self._write_rows(lines)
        except BaseException:
            if lines:
                self.log_capture.give_back(lines)
            raise

    def _write_rows(self, lines: list[dict]) -> None:
        with self._cond:  # a snapshot: the loop appends on while this writes
            points = list(self.buffer)
            progress, rows = self.progress_due, list(self.checkpoint_rows)
        if not points and progress is None and not rows and not lines:
            return
        with session_scope() as session:
            if lines:
                session.execute(insert(JobLog), [{"job_id": self.job_id, **line}
                                                 for line in lines])
            if self.written_up_to is None:
                self.written_up_to = metric_store.last_point_id(session, self.job_id)
            inserted = metric_store.insert_points(session, self.job_id, points)
            ids = inserted.ids
            if inserted.replayed:
                metric_store.warn_of_changed_replays(session, self.job_id, inserted.replayed)
            if progress is not None and not jobs.record_progress(
                    session, self.job_id, *progress, self.settings.lease_seconds,
                    attempt=self.attempt):
                self._lose("lease_lost")
            for row in rows:
                store_checkpoint_row(session, self.job_id, row)
        # Committed: only now forget them (only this writer removes, from the front).
        with self._cond:
            del self.buffer[:len(points)]
            self.checkpoint_rows = self.checkpoint_rows[len(rows):]
            if self.progress_due == progress:
                self.progress_due = None
        # Publish what was stored now, each with its row id and the id this job's points had
        # reached before (a reader that has less missed some: it fills the gap from the
        # database).
        prev = self.written_up_to
        if ids:
            self.written_up_to = max(prev, max(ids.values()))
        if self.events.due():
            payloads = events.metrics_entries(stored_point_events(points, ids), prev)
            if progress is not None:
                payloads.append({"type": "progress", "epoch": progress[0],
                                 "step": progress[1], "total_steps": progress[2]})
            self.events.publish(payloads)
        if rows and self.spec is not None:
            # After the commit and the publish, and never raising: an outage here used to
            # skip the publish and make _write give back log lines already stored (stored
            # twice at the next flush). Retention looks at every row, so the next epoch's
            # pass catches up on what this one missed.
            try:
                apply_retention(self.job_id, self.spec, self.settings.checkpoint_keep)
            except DBAPIError as exc:
                if not is_outage(exc):
                    raise
                log.warning("job %s: checkpoint retention skipped (database unreachable); "
                            "the next epoch applies it", self.job_id)
