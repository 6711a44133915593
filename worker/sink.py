"""The loop's Reporter for a real job: batched rows in the database, events on Redis."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Sequence

from core import events, jobs
from core.config import Settings
from core.db import session_scope
from core.metrics import finite
from worker.loop import Metric

log = logging.getLogger(__name__)


class JobReporter:
    """Buffers points and writes them in one INSERT (and one Redis pipeline) per flush."""

    def __init__(self, job_id: str, settings: Settings, redis_client=None,
                 flush_every_s: float = 0.5, max_buffer: int = 500):
        self.job_id = job_id
        self.settings = settings
        self.redis = redis_client
        self.flush_every_s = flush_every_s
        self.max_buffer = max_buffer
        self.buffer: list[Metric] = []
        self.last_flush = 0.0

    def metrics(self, points: Sequence[Metric]) -> None:
        self.buffer.extend(points)
        if (len(self.buffer) >= self.max_buffer
                or time.monotonic() - self.last_flush >= self.flush_every_s):
            self.flush()

    def progress(self, epoch: int, step: int, total_steps: int) -> None:
        self.flush()
        with session_scope() as session:
            jobs.record_progress(session, self.job_id, epoch, step, total_steps,
                                 self.settings.lease_seconds)
        events.publish_or_warn(self.redis, self.job_id, [{"type": "progress", "epoch": epoch,
                                                          "step": step,
                                                          "total_steps": total_steps}])

    def should_stop(self) -> bool:
        self.flush()
        with session_scope() as session:
            return jobs.cancel_requested(session, self.job_id)

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.buffer:
            return
        points, self.buffer = [asdict(p) for p in self.buffer], []
        with session_scope() as session:
            jobs.insert_metrics(session, self.job_id, points)
        events.publish_or_warn(self.redis, self.job_id,
                               [{"type": "metric", **p, "value": finite(p["value"])}
                                for p in points])
