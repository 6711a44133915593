"""Waiting through a database outage outside the loop: reading the job, claiming it,
recording how it ended.

The call is tried again with a backoff while the database is unreachable, as opposed to a
statement it rejected, which raises at once."""
from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError

from core.db import is_outage

log = logging.getLogger(__name__)

T = TypeVar("T")


def through_outage(job_id: str, what: str, fn: Callable[[], T],
                   give_up_after: float | None = None) -> T:
    """fn(), called again (backoff 1 s doubling to 10 s) while the database is unreachable:
    a lost or refused connection, not a statement it rejected. With give_up_after (seconds)
    the last outage error is raised after that long; without, it waits for as long as it
    takes, with a warning now and then."""
    started = time.monotonic()
    delay, warned_at = 1.0, None
    while True:
        try:
            result = fn()
        except DBAPIError as exc:
            if not is_outage(exc) or (give_up_after is not None
                                      and time.monotonic() - started >= give_up_after):
                raise
            if warned_at is None or time.monotonic() - warned_at >= 60:
                log.warning("job %s: database unreachable while %s; trying again: %s",
                            job_id, what, str(exc).splitlines()[0][:200])
                warned_at = time.monotonic()
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        if warned_at is not None:
            log.info("job %s: database back after %.1fs; %s", job_id,
                     time.monotonic() - started, what)
        return result
