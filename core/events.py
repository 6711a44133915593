"""The live channel: one Redis stream per job, `trainhub:job:{id}:events`.

Each stream entry's `data` is one JSON object with a `type`. The worker writes the points
of one database write as `metrics` entries, {"type": "metrics", "prev": ..., "points":
[{"id", "name", "epoch", "batch", "step", "value"}, ...]} (up to METRICS_PER_ENTRY points
each): one XADD per 1,000 points rather than one per point, which cost the writer half its
time. `decode` turns any entry back into single events (`metric`, `status`, ...).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import orjson

log = logging.getLogger(__name__)

STREAM_MAXLEN = 100_000
METRICS_PER_ENTRY = 1000
_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS  # as json.dumps wrote them: int keys as strings


def stream_key(job_id: str) -> str:
    return f"trainhub:job:{job_id}:events"


def connect(redis_url: str, timeout: float = 5.0):
    """A client whose commands give up after `timeout` seconds (connecting, or waiting for a
    reply): a hung or unreachable server costs at most that much per call."""
    import redis

    return redis.Redis.from_url(redis_url, socket_timeout=timeout,
                                socket_connect_timeout=timeout)


def publish(client, job_id: str, events: Iterable[dict[str, Any]],
            expire_seconds: int | None = None) -> None:
    """Append events (each one JSON object with a `type`) to the job's stream in one round trip."""
    pipe = client.pipeline(transaction=False)
    key = stream_key(job_id)
    for event in events:
        pipe.xadd(key, {"data": orjson.dumps(event, option=_DUMPS_OPTIONS)},
                  maxlen=STREAM_MAXLEN, approximate=True)
    if expire_seconds is not None:
        pipe.expire(key, expire_seconds)
    pipe.execute()


def publish_or_warn(client, job_id: str, events: list[dict[str, Any]],
                    expire_seconds: int | None = None, quiet: bool = False) -> bool:
    """publish(), logging a warning instead of raising: the database is the truth, and a
    live-channel outage must not fail a job. A None client (no Redis configured) is a no-op.
    True if published; quiet logs a failure at DEBUG only (a caller that already warned
    about this outage: one line per failed flush would flood the job's log)."""
    if client is None:
        return False
    try:
        publish(client, job_id, events, expire_seconds)
    except Exception as exc:
        log.log(logging.DEBUG if quiet else logging.WARNING,
                "job %s: could not publish %d event(s) to Redis: %s", job_id,
                sum(len(e["points"]) if e.get("type") == "metrics" else 1 for e in events), exc)
        return False
    return True


def metrics_entries(points: list[dict[str, Any]], prev: int | None) -> list[dict[str, Any]]:
    """Stored points as `metrics` entries: each point {"id", "name", "epoch", "batch",
    "step", "value"}, and prev, the job's last point id before them (a reader holding less
    missed some and fills the gap from the database)."""
    return [{"type": "metrics", "prev": prev, "points": points[i:i + METRICS_PER_ENTRY]}
            for i in range(0, len(points), METRICS_PER_ENTRY)]


def stored_events(client, job_id: str) -> list[dict[str, Any]]:
    """Every event the job's stream holds now, oldest first, one per point (decode)."""
    return [event for _id, fields in client.xrange(stream_key(job_id))
            for event in decode(fields[b"data"])]


def decode(data: bytes | str) -> list[dict[str, Any]]:
    """The events a stream entry's data holds: a `metrics` entry is one `metric` event per
    point (each with the entry's prev); any other entry is itself."""
    event = orjson.loads(data)
    if event.get("type") != "metrics":
        return [event]
    prev = event.get("prev")
    return [{"type": "metric", **point, "prev": prev} for point in event.get("points", ())]
