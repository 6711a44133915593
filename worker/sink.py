"""The loop's Reporter for a real job: batched rows in the database, events on Redis.

The database is the truth. While it is unreachable the reporter keeps what it was handed
(points, progress, epoch checkpoint rows) and retries with backoff, so training goes on;
past `database_outage_seconds` it tells the loop to stop (the runner then saves a resume
checkpoint that carries the unwritten points). Redis is best effort: an outage costs live
events, never data, and little time: after a failed publish the reporter skips publishing
(readers fill the gap from the database) and tries again with backoff.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from typing import Sequence

from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError

from core import checkpoints as ckpt
from core import events, jobs
from core.artifacts import get_store
from core.config import Settings
from core.db import session_scope
from core.metrics import finite, finite_values
from core.tables import Checkpoint, JobLog
from worker.loop import Metric

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 30.0
# Redis: a hung or unreachable server costs a publish its socket timeout (1 s with the
# runner's client) each time, so after a failure the reporter tries again only after this
# backoff (1 s, doubling, capped): a hung Redis used to cost every flush, twice a second.
_EVENTS_BACKOFF_MAX_S = 10.0


class DatabaseOutage(Exception):
    """The database stayed unreachable for longer than database_outage_seconds."""


def is_outage(exc: BaseException) -> bool:
    """A lost or refused connection, as opposed to a statement the database rejected."""
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or type(exc.orig).__name__ in ("OperationalError",
                                                                  "InterfaceError"))


class JobReporter:
    """Buffers points and writes them in one INSERT (and one Redis pipeline) per flush."""

    def __init__(self, job_id: str, settings: Settings, redis_client=None,
                 flush_every_s: float = 0.5, max_buffer: int = 500, attempt: int | None = None,
                 spec: dict | None = None, max_pending: int = 1_000_000):
        self.job_id = job_id
        self.settings = settings
        self.redis = redis_client
        self.flush_every_s = flush_every_s
        self.max_buffer = max_buffer
        self.attempt = attempt  # fencing: writes count only while this attempt holds the job
        self.spec = spec
        self.max_pending = max_pending
        self.buffer: list[Metric] = []
        self.progress_due: tuple[int, int, int] | None = None
        self.checkpoint_rows: list[dict] = []
        self.last_flush = 0.0
        self.outage_since: float | None = None
        self.retry_at = 0.0
        self.backoff = 1.0
        self.lost: str | None = None  # "cancel" or "lease_lost" once the row says so
        self.events_down_since: float | None = None
        self.events_retry_at = 0.0
        self.events_backoff = 1.0
        self.written_up_to: int | None = None  # row id of this job's newest stored point
        self.log_capture = None  # a worker.joblog.JobLogCapture: its lines go with each flush
        self.tensorboard = None  # a worker.tensorboard.TensorBoardLog, fed every point

    # ---- the Reporter protocol -----------------------------------------------------------

    def metrics(self, points: Sequence[Metric]) -> None:
        self.buffer.extend(points)
        if self.tensorboard is not None:
            self.tensorboard.add(points)
        if (len(self.buffer) >= self.max_buffer
                or time.monotonic() - self.last_flush >= self.flush_every_s):
            self.try_flush()

    def progress(self, epoch: int, step: int, total_steps: int) -> None:
        self.progress_due = (epoch, step, total_steps)
        self.try_flush()

    def should_stop(self) -> bool | str:
        if self.try_flush() and self.lost is None:
            try:
                with session_scope() as session:
                    if jobs.cancel_requested(session, self.job_id):
                        self.lost = "cancel"
            except DBAPIError as exc:
                # The database can go down between the flush and this read: that is an
                # outage like any other (buffer and train on), not a reason to fail the job.
                if not is_outage(exc):
                    raise
                self._outage(exc)
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
        """An epoch checkpoint's row, stored (and retention applied) with the next flush."""
        self.checkpoint_rows.append(row)
        self.try_flush()

    def pending_points(self) -> list[dict]:
        return [asdict(p) for p in self.buffer]

    def try_flush(self, force: bool = False) -> bool:
        """Write what is buffered if the database answers; False (and keep it all) if not.
        During an outage it tries only when the backoff allows, or when forced."""
        self.last_flush = time.monotonic()
        if self.outage_since is not None and time.monotonic() < self.retry_at and not force:
            return False
        try:
            self._write()
        except DBAPIError as exc:
            if not is_outage(exc):
                raise
            self._outage(exc)
            return False
        if self.outage_since is not None:
            log.info("job %s: database back after %.1fs; buffered points written", self.job_id,
                     time.monotonic() - self.outage_since)
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
        deadline = time.monotonic() + self.settings.database_outage_seconds
        while not self.try_flush():
            if time.monotonic() > deadline:
                if self.try_flush(force=True):  # the backoff may hide that it is back
                    return
                raise DatabaseOutage(f"the database was unreachable for more than "
                                     f"{self.settings.database_outage_seconds:g}s")
            time.sleep(max(0.05, min(self.retry_at - time.monotonic(), 1.0)))

    # ---- writing -------------------------------------------------------------------------

    def _write(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.flush()
        lines = self.log_capture.take() if self.log_capture is not None else []
        try:
            self._write_rows(lines)
        except BaseException:
            if lines:
                self.log_capture.give_back(lines)
            raise

    def _write_rows(self, lines: list[dict]) -> None:
        points = [asdict(p) for p in self.buffer]
        progress, rows = self.progress_due, list(self.checkpoint_rows)
        if not points and progress is None and not rows and not lines:
            return
        with session_scope() as session:
            if lines:
                session.execute(insert(JobLog), [{"job_id": self.job_id, **line}
                                                 for line in lines])
            if self.written_up_to is None:
                self.written_up_to = jobs.last_point_id(session, self.job_id)
            inserted = jobs.insert_metrics(session, self.job_id, points)
            replayed = inserted.replayed
            if replayed:
                self._compare_replayed(session, replayed)
            if progress is not None and not jobs.record_progress(
                    session, self.job_id, *progress, self.settings.lease_seconds,
                    attempt=self.attempt):
                self.lost = self.lost or "lease_lost"
            for row in rows:
                self._store_checkpoint_row(session, row)
        # Committed: only now forget them.
        del self.buffer[:len(points)]
        self.checkpoint_rows = self.checkpoint_rows[len(rows):]
        if self.progress_due == progress:
            self.progress_due = None
        # Publish what was stored now, each with its row id and the id this job's points had
        # reached before (a reader that has less missed some: it fills the gap from the
        # database). Replayed points are not published again.
        payloads = []
        not_stored = {id(p) for p in replayed}
        for p in points:
            point_id = inserted.ids.get((p["name"], p["step"]))
            if point_id is not None and id(p) not in not_stored:
                payloads.append({"type": "metric", **p, "value": finite(p["value"]),
                                 "id": point_id, "prev": self.written_up_to})
        if inserted.ids:
            self.written_up_to = max(self.written_up_to, *inserted.ids.values())
        if progress is not None:
            payloads.append({"type": "progress", "epoch": progress[0], "step": progress[1],
                             "total_steps": progress[2]})
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

    def _compare_replayed(self, session, replayed: list[dict]) -> None:
        """A resumed run writes some points again; the stored one stays. Say so when the
        values differ (a run that is not bitwise reproducible, e.g. on a GPU)."""
        stored = jobs.stored_values(session, self.job_id,
                                    [(p["name"], p["step"]) for p in replayed])
        for p in replayed:
            old = stored.get((p["name"], p["step"]))
            same = old == p["value"] or (old is not None and math.isnan(old)
                                         and math.isnan(p["value"]))
            if not same:
                log.warning("job %s: replayed point %s at step %d is %r; the stored %r is kept",
                            self.job_id, p["name"], p["step"], p["value"], old)

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
