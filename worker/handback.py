"""A graceful stop: SIGTERM asks the loop to checkpoint at its next step (stop_on_sigterm),
and the job goes back to `queued` for any worker to resume, or ends `cancelled` when its
cancel was requested meanwhile (hand_back)."""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError

from core import events, jobs
from core.db import is_outage, session_scope
from core.metrics import finite_values
from core.states import InvalidTransition, JobStatus
from worker.control import StopFlag

log = logging.getLogger(__name__)


@contextmanager
def stop_on_sigterm(stop: StopFlag):
    """SIGTERM (docker stop, systemd, `trainhub up` on Ctrl-C, or the worker's main process
    passing its own on) asks the loop to checkpoint at its next step and hand the job back.
    Only the main thread can install a handler; elsewhere (tests) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set("preempt"))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def hand_back(job_id: str, attempt: int, reason: str, redis_client, settings,
              final_metrics: dict | None = None) -> str:
    """Hand the job back (queued) for any worker to resume, or end it `cancelled` when its
    cancel was requested meanwhile; the job's status after it. Its message is not sent from
    here: this worker is going down and, with a broker like the embedded one, could take the
    message itself. A reaper (of this worker's successor or of any other) re-sends it once
    enqueue_grace_seconds have passed."""
    final = finite_values(final_metrics) if final_metrics else None
    try:
        with session_scope() as session:
            status_now = jobs.requeue(session, job_id, attempt, graceful=True, reason=reason,
                                      final_metrics=final).status
    except InvalidTransition as exc:
        log.info("job %s: not requeued (%s)", job_id, exc)
        return exc.current.value
    except DBAPIError as exc:
        if not is_outage(exc):
            raise
        # A graceful stop must not wait for the database: the job keeps its lease until it
        # runs out, then a reaper requeues it and it resumes from the resume checkpoint.
        log.warning("job %s: could not hand it back (database unreachable); a reaper "
                    "requeues it once its lease expires", job_id)
        return "interrupted"
    if status_now == JobStatus.cancelled.value:
        log.info("job %s: cancelled", job_id)
        events.publish_or_warn(redis_client, job_id, [{"type": "status", "status": status_now,
                                                       "error": None, "final_metrics": final}],
                               expire_seconds=settings.events_ttl_seconds)
    return status_now
