"""A job's live events on Redis, best effort: the points a write stored, and progress.

One pipeline per write. An outage costs live events, never data, and little time: after a
failed publish the next waits for a backoff, and a reader fills the gap from the database."""
from __future__ import annotations

import logging
import time
from typing import Sequence

from core import events
from core.metrics import finite

log = logging.getLogger(__name__)

# A hung or unreachable server costs a publish its socket timeout (1 s with the runner's
# client) each time, so after a failure the next try waits for this backoff (1 s, doubling,
# capped): a hung Redis used to cost every flush, twice a second.
_BACKOFF_MAX_S = 10.0


def stored_point_events(points: Sequence, ids: dict[tuple[str, int], int]) -> list[dict]:
    """The points a write stored now ({(name, step): row id}), in the order handed over, each
    with its row id and its value made finite. Replayed points are not published again, and
    a batch's duplicate has its first one's id: it goes once."""
    stored = []
    if ids:
        get = ids.get
        for p in points:
            point_id = get((p.name, p.step))
            if point_id is not None:
                stored.append({"id": point_id, "name": p.name, "epoch": p.epoch,
                               "batch": p.batch, "step": p.step, "value": finite(p.value)})
        if len(ids) < len(points):
            seen: set[int] = set()
            stored = [e for e in stored if not (e["id"] in seen or seen.add(e["id"]))]
    return stored


class EventPublisher:
    """Publishes a job's events to its Redis stream; no client (None) publishes nothing."""

    def __init__(self, redis_client, job_id: str):
        self.redis, self.job_id = redis_client, job_id
        self.down_since: float | None = None
        self.retry_at = 0.0
        self.backoff = 1.0

    def due(self) -> bool:
        """Whether a publish would be tried now (worth building its events for)."""
        return self.redis is not None and (self.down_since is None
                                           or time.monotonic() >= self.retry_at)

    def publish(self, payloads: list[dict]) -> None:
        """Best effort, and cheap while Redis is down or hung: after a failure the next try
        waits for a backoff (1 s doubling to 10 s) rather than costing every flush a socket
        timeout. Events skipped meanwhile are not lost data: each published point carries
        `prev`, from which a reader sees the gap and fills it from the database."""
        if self.redis is None or not payloads:
            return
        now = time.monotonic()
        if self.down_since is not None and now < self.retry_at:
            return
        if events.publish_or_warn(self.redis, self.job_id, payloads,
                                  quiet=self.down_since is not None):
            if self.down_since is not None:
                log.info("job %s: Redis back after %.1fs; live events published again",
                         self.job_id, time.monotonic() - self.down_since)
                self.down_since = None
            return
        if self.down_since is None:  # publish_or_warn logged this first failure
            self.down_since, self.backoff = now, 1.0
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, _BACKOFF_MAX_S)
