"""The reaper every worker runs beside its jobs (no separate beat process): it requeues
running jobs whose lease expired (or fails them past max_attempts) and re-sends queued jobs
whose message never reached the broker, and takes each running sweep's next step (what a
crash between a trial's end and that step left undone). Many workers may run it: one pass
at a time holds a database lock, and claiming stays idempotent, so a duplicate message is
harmless; a sweep's step is idempotent too (core.sweeps.trials).

Each pass also removes the TensorBoard runs of deleted jobs from this worker's data dir:
the API removes them only where it shares that folder, and on Postgres keeps the planner's
statistics current after bulk loads (refresh_statistics)."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterable

from sqlalchemy import select, text

from core import jobs
from core.config import Settings
from core.db import session_scope
from core.queue import RUN_JOB_TASK, enqueue
from core.routing import job_queue
from core.tables import Base, Job
from core.tensorboard_runs import prune_runs
from worker.sweep_steps import advance_sweeps

log = logging.getLogger(__name__)


def reap_once(settings: Settings) -> jobs.Reaped:
    with session_scope() as session:
        outcome = jobs.reap(session, settings.enqueue_grace_seconds)
        to_send = outcome.requeued + outcome.unsent
        specs = dict(session.execute(select(Job.id, Job.spec).where(Job.id.in_(to_send)))
                     .all()) if to_send else {}
    for job_id in outcome.failed:
        log.error("job %s: failed: its worker was lost too many times", job_id)
    for job_id in outcome.cancelled:
        log.info("job %s: cancelled (its worker was lost after the cancel was requested)",
                 job_id)
    for job_id in to_send:
        try:
            enqueue(RUN_JOB_TASK, job_id, queue=job_queue(settings.queue,
                                                          specs.get(job_id) or {}))
        except Exception as exc:  # the next pass tries again: enqueued_at stays empty
            log.warning("job %s: could not send it to the broker: %s", job_id, exc)
            continue
        with session_scope() as session:
            jobs.mark_enqueued(session, job_id)
        log.info("job %s: %s", job_id, "requeued after its lease expired"
                 if job_id in outcome.requeued else "re-sent (no record of its message)")
    return outcome


def prune_tensorboard(settings: Settings) -> list[Path]:
    """Delete the run folders (core.tensorboard_runs) whose job no longer exists."""
    def existing(job_ids: Iterable[str]) -> set[str]:
        ids, found = sorted(job_ids), set()
        with session_scope() as session:
            for start in range(0, len(ids), 1000):  # bound the statement's parameters
                found.update(session.scalars(select(Job.id).where(
                    Job.id.in_(ids[start:start + 1000]))))
        return found

    gone = prune_runs(settings.tensorboard_dir, existing)
    if gone:
        log.info("removed the TensorBoard runs of %d deleted job(s): %s", len(gone),
                 ", ".join(folder.name for folder in gone))
    return gone


# The sink writes metric points in bulk (a COPY a batch), and autovacuum analyzes a table
# only once a tenth of it has changed (never where it is off): a new job's 100,000 points
# left the planner guessing 1 row for that job. So a table is analyzed here once the
# rows changed since its last ANALYZE reach a tenth of it, at least STALE_MIN and at most
# STALE_MAX. Reading the counters is cheap, and ANALYZE reads a fixed sample (30,000 rows at
# the default statistics target), so its cost does not grow with the table; SKIP_LOCKED
# leaves a table another worker is analyzing right now to that one.
STALE_MIN, STALE_MAX = 1_000, 100_000
_STALE = text("SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(:names) "
              "AND schemaname = current_schema() "
              "AND n_mod_since_analyze >= least(:most, greatest(:least, n_live_tup / 10))")


def refresh_statistics(settings: Settings) -> list[str]:
    """ANALYZE trainhub's tables whose statistics are stale by the rule above (Postgres
    only); their names."""
    with session_scope() as session:
        dialect = session.get_bind().dialect
        if dialect.name != "postgresql":
            return []
        stale = sorted(session.scalars(_STALE, {"names": list(Base.metadata.tables),
                                                "least": STALE_MIN, "most": STALE_MAX}))
        for name in stale:
            quoted = dialect.identifier_preparer.quote(name)
            session.execute(text(f"ANALYZE (SKIP_LOCKED) {quoted}"))
    if stale:
        log.info("analyzed %s (statistics stale after many changed rows)", ", ".join(stale))
    return stale


class ReaperThread:
    """reap_once every reaper_interval_seconds until stopped; errors are logged, not fatal."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainhub-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> None:
        """Stop after the pass under way, without waiting for it (safe in a signal handler)."""
        self._done.set()

    def stop(self) -> None:
        self.halt()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:  # a pass at start too: jobs handed back by a worker stopped before
            for task in (reap_once, advance_sweeps, prune_tensorboard, refresh_statistics):
                try:
                    task(self.settings)
                except Exception as exc:  # e.g. the database is restarting
                    log.warning("reaper pass failed: %s", str(exc).splitlines()[0][:200])
            if self._done.wait(self.settings.reaper_interval_seconds):
                return
