"""A running job's lease, renewed by a thread of its own: a long evaluation, a slow import
or a compilation never lets it lapse, and a lost lease stops the loop at its next step."""
from __future__ import annotations

import logging
import threading

from core import jobs
from core.db import session_scope
from worker.control import StopFlag

log = logging.getLogger(__name__)


class LeaseHeartbeat:
    def __init__(self, job_id: str, attempt: int, lease_seconds: int, stop: StopFlag):
        self.job_id, self.attempt, self.lease_seconds = job_id, attempt, lease_seconds
        self.stop = stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}",
                                        daemon=True)

    def __enter__(self) -> "LeaseHeartbeat":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        interval = max(1.0, self.lease_seconds / 3)
        while not self._done.wait(interval):
            try:
                with session_scope() as session:
                    held = jobs.renew_lease(session, self.job_id, self.attempt,
                                            self.lease_seconds)
            except Exception as exc:  # the database may be restarting: try again next beat
                log.warning("job %s: could not renew the lease: %s", self.job_id,
                            str(exc).splitlines()[0][:200])
                continue
            if not held:
                log.warning("job %s: attempt %d no longer holds the job; stopping it",
                            self.job_id, self.attempt)
                self.stop.set("lease_lost")
                return
