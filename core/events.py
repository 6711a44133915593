"""The live channel: one Redis stream per job, `trainhub:job:{id}:events`."""
from __future__ import annotations

import json
import logging
from typing import Any, Iterable

log = logging.getLogger(__name__)

STREAM_MAXLEN = 100_000


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
        pipe.xadd(key, {"data": json.dumps(event)}, maxlen=STREAM_MAXLEN, approximate=True)
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
                "job %s: could not publish %d event(s) to Redis: %s", job_id, len(events), exc)
        return False
    return True
