"""Runs one attempt of a job: claim it, build data and model (fresh or from its latest
checkpoint), call the loop, and record how it ended.

How an attempt ends: succeeded, cancelled or failed (terminal); handed back to `queued`
after a graceful stop (SIGTERM: a resume checkpoint first); or left to the reaper when its
lease was lost or the database stayed down (it resumes elsewhere from its checkpoint).
"""
from __future__ import annotations

import logging
from contextlib import nullcontext

from sqlalchemy.exc import DBAPIError

from core import events, jobs
from core.artifacts import get_store
from core.config import get_settings
from core.db import is_outage, session_scope
from core.files import NoSpaceLeft
from core.metrics import finite_values
from core.states import InvalidTransition, JobStatus
from core.tables import Job
from worker.checkpointing import CheckpointWriter, ResumeWriter
from worker.control import CheckpointPolicy, RunControl, StopFlag
from worker.data import DatasetUnavailable
from worker.ddp.launch import process_group, rank_devices
from worker.handback import hand_back, stop_on_sigterm
from worker.heartbeat import LeaseHeartbeat
from worker.job_inputs import JobInputError, read_inputs, start_weights
from worker.joblog import job_logging
from worker.loop import FitResult, fit
from worker.outages import through_outage
from worker.recipe import resolve_device
from worker.sink import DatabaseOutage, JobReporter
from worker.tensorboard import TensorBoardLog
from worker.tensorboard_tee import TensorBoardTee

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 1.0  # the live channel's client: see run()


def run(job_id: str, worker_name: str) -> str:
    """Returns the job's status after this attempt, or 'skipped' when the delivery is not
    ours to run (no such job, or it is not queued: running elsewhere, or finished)."""
    settings = get_settings()
    # A short timeout: the loop's thread publishes, and a hung Redis used to cost it 5 s at
    # every flush (twice a second), training at a crawl. An XADD takes well under 1 ms.
    redis_client = (events.connect(settings.redis_url, timeout=PUBLISH_TIMEOUT_S)
                    if settings.redis_url else None)

    def read_spec() -> dict | None:
        with session_scope() as session:
            job = session.get(Job, job_id)
            return None if job is None else dict(job.spec)

    # A message delivered while the database is down used to raise here: Celery acked the
    # message as failed and the job stayed `queued` with no message left to run it (the
    # reaper re-sends only jobs never sent). So wait for the database, for as long as it
    # takes: the message stays unacknowledged meanwhile (a worker stopped or lost hands it
    # back to the broker), and no other job could run without the database anyway.
    spec = through_outage(job_id, "reading the job", read_spec)
    if spec is None:
        log.warning("job %s: no such job, dropping the message", job_id)
        return "skipped"
    world_size = spec["hyperparameters"].get("world_size", 1)
    try:  # a DDP job's rank 0 runs here, on the first of its ranks' devices
        devices = (rank_devices(spec.get("device", "auto"), world_size) if world_size > 1
                   else [resolve_device(spec.get("device", "auto"))])
    except RuntimeError as exc:
        return _finish(job_id, None, JobStatus.failed, redis_client, settings, error=str(exc))
    device = devices[0]

    def claim() -> tuple[int, int | None]:
        with session_scope() as session:
            job = jobs.claim(session, job_id, worker_name, str(device), settings.lease_seconds)
            return job.attempts, job.pause_at_epoch

    try:
        attempt, pause_at_epoch = through_outage(job_id, "claiming the job", claim)
    except InvalidTransition as exc:
        log.info("job %s: not claimed (%s)", job_id, exc)
        return "skipped"
    events.publish_or_warn(redis_client, job_id, [{"type": "status",
                                                   "status": JobStatus.running.value,
                                                   "worker": worker_name,
                                                   "device": str(device), "attempt": attempt}])
    # Set by SIGTERM, the lease's heartbeat, or the reporter's poll of the cancel flag.
    stop = StopFlag()
    with job_logging(job_id, attempt) as log_capture:
        reporter = JobReporter(job_id, settings, redis_client, attempt=attempt, spec=spec,
                               stop=stop, log_capture=log_capture)
        try:
            return _run_attempt(job_id, attempt, spec, devices, worker_name, settings,
                                redis_client, reporter, stop, pause_at_epoch)
        finally:
            reporter.close()  # its background writer thread ends with the job
            try:  # the last log lines (how it ended); never wait on a database outage
                reporter.try_flush()
            except Exception as exc:
                log.warning("job %s: could not store its last log lines: %s", job_id, exc)


def _run_attempt(job_id: str, attempt: int, spec: dict, devices: list, worker_name: str,
                 settings, redis_client, reporter: JobReporter, stop: StopFlag,
                 pause_at_epoch: int | None = None) -> str:
    device = devices[0]
    log.info("job %s: attempt %d claimed by %s on device %s", job_id, attempt, worker_name,
             device)
    store = get_store()
    result: FitResult | None = None
    tensorboard: TensorBoardLog | None = None
    try:
        with LeaseHeartbeat(job_id, attempt, settings.lease_seconds, stop), \
                stop_on_sigterm(stop):
            inputs = read_inputs(job_id, spec, settings, store, reporter)
            dataset, hp, resume = inputs.dataset, inputs.hp, inputs.resume
            tensorboard = TensorBoardLog.for_job(
                settings.tensorboard_dir, job_id, spec.get("name", ""),
                purge_step=resume["step"] + 1 if resume is not None else None)
            start_weights(job_id, attempt, spec, inputs, store)
            resume_writer = ResumeWriter(job_id, spec, dataset, store, reporter.pending_points)
            # World size 1 never starts a process group: the plain loop, as always.
            ranks = (process_group(job_id, hp, devices, spec, inputs.source, inputs.resume_file)
                     if hp.world_size > 1 else nullcontext(None))
            with ranks as dist:
                control = RunControl(
                    TensorBoardTee(reporter, tensorboard),
                    check_every_s=settings.cancel_check_seconds, stop=stop,
                    checkpoint=resume_writer,
                    policy=CheckpointPolicy(settings.checkpoint_every_steps,
                                            settings.checkpoint_every_seconds),
                    on_epoch_end=CheckpointWriter(job_id, spec, dataset, store,
                                                  reporter.record_checkpoint),
                    max_seconds=spec.get("max_runtime_seconds"), dist=dist,
                    device_dataset_fraction=settings.device_dataset_fraction,
                    pause_after_epoch=pause_at_epoch)
                result = fit(inputs.model, dataset, hp, device, control, resume_from=resume)
            if result.stop_reason in ("preempt", "db_outage", "pause"):
                resume_writer(result.state)
            if result.stop_reason != "db_outage":
                try:
                    reporter.flush()
                except DatabaseOutage:
                    resume_writer(result.state)  # it carries the points not yet written
                    raise
    except (DatasetUnavailable, JobInputError) as exc:
        return _finish(job_id, attempt, JobStatus.failed, redis_client, settings,
                       error=str(exc))
    except DatabaseOutage as exc:
        log.error("job %s: %s; its checkpoint stays for a later attempt", job_id, exc)
        return "interrupted"
    except Exception as exc:
        if is_outage(exc):
            # The database went down outside the loop (while setting up the attempt: resume
            # state, init_from, an uploaded dataset), where the reporter's buffering does not
            # reach. That is no fault of the job: it used to end `failed` with the driver's
            # error. Leave it to its lease, like a longer outage in the loop: a reaper
            # requeues it and an attempt resumes it from its latest checkpoint.
            log.error("job %s: the database became unreachable (%s); left for a later "
                      "attempt", job_id, str(exc).splitlines()[0][:200])
            return "interrupted"
        log.exception("job %s: the attempt raised an error", job_id)
        _keep_logged_points(reporter)
        return _finish(job_id, attempt, JobStatus.failed, redis_client, settings,
                       error=str(exc) if isinstance(exc, NoSpaceLeft)
                       else f"{type(exc).__name__}: {exc}")
    except BaseException:
        # A stop we did not arrange (SystemExit, KeyboardInterrupt): hand the job back; it
        # resumes from its latest checkpoint. Then let the process go down as asked.
        _keep_logged_points(reporter)
        hand_back(job_id, attempt, "interrupted: the worker shut down while it ran",
                  redis_client, settings)
        raise
    finally:
        if tensorboard is not None:
            tensorboard.close()
    return _conclude(job_id, attempt, result, redis_client, settings)


def _conclude(job_id: str, attempt: int, result: FitResult, redis_client, settings) -> str:
    reason = result.stop_reason
    if reason is None:
        return _finish(job_id, attempt, JobStatus.succeeded, redis_client, settings,
                       final_metrics=result.final_metrics)
    if reason == "cancel":
        return _finish(job_id, attempt, JobStatus.cancelled, redis_client, settings,
                       final_metrics=result.final_metrics)
    if reason == "timeout":
        return _finish(job_id, attempt, JobStatus.failed, redis_client, settings,
                       final_metrics=result.final_metrics,
                       error="stopped: it ran longer than max_runtime_seconds")
    if reason == "pause":
        return _record(job_id, lambda session: jobs.pause(session, job_id, attempt,
                                                          _finite(result.final_metrics)),
                       JobStatus.paused, redis_client, settings, None, result.final_metrics)
    if reason == "preempt":
        return hand_back(job_id, attempt, "graceful stop: the worker is shutting down",
                         redis_client, settings, result.final_metrics)
    if reason == "db_outage":
        log.error("job %s: the database was unreachable for more than %gs; stopped with a "
                  "resume checkpoint (and its unwritten points) for a later attempt", job_id,
                  settings.database_outage_seconds)
        return "interrupted"
    log.warning("job %s: attempt %d lost the job (%s); nothing more is written", job_id,
                attempt, reason)
    return "lost"


def _keep_logged_points(reporter: JobReporter) -> None:
    """Points logged before a failure are still data: store them if the database lets us."""
    try:
        reporter.flush()
    except Exception as exc:
        log.warning("could not store the buffered metric points: %s", exc)


def _finite(final_metrics: dict | None) -> dict | None:
    return finite_values(final_metrics) if final_metrics else None


def _finish(job_id: str, attempt: int | None, status: JobStatus, redis_client, settings,
            error: str | None = None, final_metrics: dict | None = None) -> str:
    fields = {"final_metrics": _finite(final_metrics), "error": error}
    return _record(job_id, lambda session: jobs.transition(session, job_id, status,
                                                           attempt=attempt, **fields),
                   status, redis_client, settings, error, final_metrics)


def _record(job_id: str, change, status: JobStatus, redis_client, settings,
            error: str | None, final_metrics: dict | None) -> str:
    """Store how the attempt ended (change(session) makes the move) through a database
    outage, then say so on the job's live stream."""
    final = _finite(final_metrics)

    def record() -> str:
        with session_scope() as session:
            return change(session).status

    try:
        # The outcome is known and everything else is stored: a database that goes down
        # just now must not lose it (the task used to raise, and the job waited for its
        # lease to run out and a whole new attempt). Wait as long as the loop would.
        status_now = through_outage(job_id, f"recording {status.value}", record,
                                    give_up_after=settings.database_outage_seconds)
    except InvalidTransition as exc:
        # e.g. cancelled while queued and then failed on delivery: the first end stands.
        log.info("job %s: %s", job_id, exc)
        return exc.current.value
    except DBAPIError as exc:
        if not is_outage(exc):
            raise
        log.error("job %s: could not record it %s: the database stayed unreachable; a "
                  "reaper resumes it from its last checkpoint once its lease expires",
                  job_id, status.value)
        return "interrupted"
    log.info("job %s: %s%s", job_id, status_now, f" ({error})" if error else "")
    events.publish_or_warn(redis_client, job_id, [{"type": "status", "status": status_now,
                                                   "error": error, "final_metrics": final}],
                           expire_seconds=settings.events_ttl_seconds)
    return status_now
