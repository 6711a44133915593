"""The loop's Reporter for a real job: batched rows in the database, events on Redis.

The database is the truth. While it is unreachable the reporter keeps what it was handed
(points, progress, epoch checkpoint rows) and retries with backoff, so training goes on;
past `database_outage_seconds` it tells the loop to stop (the runner then saves a resume
checkpoint that carries the unwritten points). Redis is best effort: an outage costs live
events, never data, and little time: after a failed publish the reporter skips publishing
(readers fill the gap from the database) and tries again with backoff.

Off the training thread: metrics(), progress() and should_stop() only hand over and wake a
background writer thread (started lazily, in the process that uses the reporter), which
writes whatever has accumulated in one COPY (core.metrics.store.insert_points) and one
Redis pipeline.
The queue is bounded by `max_queue`: past it metrics() waits for the writer (back-pressure,
never a lost point) unless the database is down, when points buffer up to `max_pending` and
should_stop() then says "db_outage". flush() writes on the caller's thread and returns once
everything handed over before it is committed.
"""
from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from dataclasses import asdict
from typing import Sequence

from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError

from core import checkpoint_format as ckpt
from core import events, jobs
from core.artifacts import get_store
from core.config import Settings
from core.db import is_outage, session_scope
from core.metrics import finite, finite_values
from core.metrics import store as metric_store
from core.tables import Checkpoint, JobLog
from worker.control import StopFlag
from worker.reporting import Metric

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 30.0
# Redis: a hung or unreachable server costs a publish its socket timeout (1 s with the
# runner's client) each time, so after a failure the reporter tries again only after this
# backoff (1 s, doubling, capped): a hung Redis used to cost every flush, twice a second.
_EVENTS_BACKOFF_MAX_S = 10.0


class DatabaseOutage(Exception):
    """The database stayed unreachable for longer than database_outage_seconds."""


class JobReporter:
    """Hands points to a background writer: one COPY (and one Redis pipeline) per batch."""

    def __init__(self, job_id: str, settings: Settings, redis_client=None,
                 flush_every_s: float = 0.5, max_buffer: int = 500, attempt: int | None = None,
                 spec: dict | None = None, max_pending: int = 1_000_000,
                 max_queue: int = 200_000, stop: StopFlag | None = None):
        self.job_id = job_id
        self.settings = settings
        self.redis = redis_client
        self.flush_every_s = flush_every_s
        self.max_buffer = max_buffer  # this many waiting points wake the writer early
        self.attempt = attempt  # fencing: writes count only while this attempt holds the job
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
        self.events_down_since: float | None = None
        self.events_retry_at = 0.0
        self.events_backoff = 1.0
        self.written_up_to: int | None = None  # row id of this job's newest stored point
        self.log_capture = None  # a worker.joblog.JobLogCapture: its lines go with each flush
        self.tensorboard = None  # a worker.tensorboard.TensorBoardLog, fed every point
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
        self._raise_writer_error()
        if self.tensorboard is not None:
            self.tensorboard.add(points)
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
        self._raise_writer_error()

    def progress(self, epoch: int, step: int, total_steps: int) -> None:
        self._raise_writer_error()
        with self._cond:
            self.progress_due = (epoch, step, total_steps)
            self._wake_writer()

    def should_stop(self) -> bool | str:
        """Never waits on the database: the writer thread stores what is due and then reads
        the cancel flag; the answer is what it has found so far."""
        self._raise_writer_error()
        if self.tensorboard is not None:
            self.tensorboard.flush()
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
        if self.tensorboard is not None:
            self.tensorboard.flush()
        return self._try_write(force)

    def _try_write(self, force: bool = False) -> bool:
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
        self._raise_writer_error()
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
                written = self._try_write()
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

    def _raise_writer_error(self) -> None:
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
                self._store_checkpoint_row(session, row)
        # Committed: only now forget them (only this writer removes, from the front).
        with self._cond:
            del self.buffer[:len(points)]
            self.checkpoint_rows = self.checkpoint_rows[len(rows):]
            if self.progress_due == progress:
                self.progress_due = None
        # Publish what was stored now, each with its row id and the id this job's points had
        # reached before (a reader that has less missed some: it fills the gap from the
        # database). Replayed points are not published again.
        prev = self.written_up_to
        if ids:
            self.written_up_to = max(prev, max(ids.values()))
        if self._events_due():
            stored = []
            if ids:
                get = ids.get
                for p in points:
                    point_id = get((p.name, p.step))
                    if point_id is not None:
                        stored.append({"id": point_id, "name": p.name, "epoch": p.epoch,
                                       "batch": p.batch, "step": p.step,
                                       "value": finite(p.value)})
                if len(ids) < len(points):  # a batch's duplicate has its first one's id
                    seen: set[int] = set()
                    stored = [e for e in stored
                              if not (e["id"] in seen or seen.add(e["id"]))]
            payloads = events.metrics_entries(stored, prev)
            if progress is not None:
                payloads.append({"type": "progress", "epoch": progress[0],
                                 "step": progress[1], "total_steps": progress[2]})
            self._publish(payloads)
        if rows:
            # After the commit and the publish, and never raising: an outage here used to
            # skip the publish and make _write give back log lines already stored (stored
            # twice at the next flush). Retention looks at every row, so the next epoch's
            # pass catches up on what this one missed.
            try:
                self._apply_retention()
            except DBAPIError as exc:
                if not is_outage(exc):
                    raise
                log.warning("job %s: checkpoint retention skipped (database unreachable); "
                            "the next epoch applies it", self.job_id)

    def _events_due(self) -> bool:
        return self.redis is not None and (self.events_down_since is None
                                           or time.monotonic() >= self.events_retry_at)

    def _publish(self, payloads: list[dict]) -> None:
        """Best effort, and cheap while Redis is down or hung: after a failure the next try
        waits for a backoff (1 s doubling to 10 s) rather than costing every flush a socket
        timeout. Events skipped meanwhile are not lost data: each published point carries
        `prev`, from which a reader sees the gap and fills it from the database."""
        if self.redis is None or not payloads:
            return
        now = time.monotonic()
        if self.events_down_since is not None and now < self.events_retry_at:
            return
        if events.publish_or_warn(self.redis, self.job_id, payloads,
                                  quiet=self.events_down_since is not None):
            if self.events_down_since is not None:
                log.info("job %s: Redis back after %.1fs; live events published again",
                         self.job_id, time.monotonic() - self.events_down_since)
                self.events_down_since = None
            return
        if self.events_down_since is None:  # publish_or_warn logged this first failure
            self.events_down_since, self.events_backoff = now, 1.0
        self.events_retry_at = time.monotonic() + self.events_backoff
        self.events_backoff = min(self.events_backoff * 2, _EVENTS_BACKOFF_MAX_S)

    def _store_checkpoint_row(self, session, row: dict) -> None:
        old = session.scalar(select(Checkpoint).where(Checkpoint.job_id == self.job_id,
                                                      Checkpoint.epoch == row["epoch"]))
        if old is not None:  # a re-run of the same epoch replaces its row
            session.delete(old)
            session.flush()
        session.add(Checkpoint(job_id=self.job_id, **{**row,
                                                      "metrics": finite_values(row["metrics"])}))

    def _apply_retention(self) -> None:
        """Keep the `checkpoint_keep` newest, plus best; delete the rest (rows and files)."""
        if self.spec is None:
            return
        store = get_store()
        doomed: list[str] = []
        with session_scope() as session:
            rows = ckpt.job_checkpoints(session, self.job_id)
            best = ckpt.select_best(rows, ckpt.best_metric_name(self.spec))
            for row in rows[self.settings.checkpoint_keep:]:
                if best is not None and row.id == best.id:
                    continue
                doomed.append(row.storage_key)
                session.delete(row)
        # Files only once the rows are gone: a commit lost to an outage must not leave rows
        # that point at deleted files.
        for key in doomed:
            store.delete(key)
