"""Runs one attempt of a job: claim it, build data and model (fresh or from its latest
checkpoint), call the loop, and record how it ended.

How an attempt ends: succeeded, cancelled or failed (terminal); handed back to `queued`
after a graceful stop (SIGTERM: a resume checkpoint first); or left to the reaper when its
lease was lost or the database stayed down (it resumes elsewhere from its checkpoint).
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager, nullcontext

import torch
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

import models
from core import checkpoint_format as ckpt
from core import datasets, events, jobs
from core.artifacts import get_store, resume_key
from core.config import get_settings
from core.db import session_scope
from core.errors import FieldError
from core.files import NoSpaceLeft
from core.init_from import load_init_from
from core.jobspec import Hyperparameters
from core.metrics import finite_values
from core.states import InvalidTransition, JobStatus
from core.tables import Job
from core.tenancy import tenant_of
from core.tensor_datasets import ImageDataset
from worker.checkpointing import CheckpointWriter, ResumeWriter, training_state_of
from worker.control import CheckpointPolicy, RunControl, StopFlag, progress_epoch
from worker.data import DatasetUnavailable, read_dataset
from worker.ddp.launch import process_group, rank_devices
from worker.heartbeat import LeaseHeartbeat
from worker.joblog import job_logging
from worker.loop import FitResult, fit
from worker.recipe import resolve_device
from worker.reporting import Metric
from worker.sink import DatabaseOutage, JobReporter, is_outage
from worker.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 1.0  # the live channel's client: see run()


class JobInputError(Exception):
    """Something the job asked for cannot be used; the message is for the user."""


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
    spec = _through_outage(job_id, "reading the job", read_spec)
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

    def claim() -> int:
        with session_scope() as session:
            return jobs.claim(session, job_id, worker_name, str(device),
                              settings.lease_seconds).attempts

    try:
        attempt = _through_outage(job_id, "claiming the job", claim)
    except InvalidTransition as exc:
        log.info("job %s: not claimed (%s)", job_id, exc)
        return "skipped"
    events.publish_or_warn(redis_client, job_id, [{"type": "status",
                                                   "status": JobStatus.running.value,
                                                   "worker": worker_name,
                                                   "device": str(device), "attempt": attempt}])
    # Set by SIGTERM, the lease's heartbeat, or the reporter's poll of the cancel flag.
    stop = StopFlag()
    reporter = JobReporter(job_id, settings, redis_client, attempt=attempt, spec=spec,
                           stop=stop)
    with job_logging(job_id, attempt) as log_capture:
        reporter.log_capture = log_capture
        try:
            return _run_attempt(job_id, attempt, spec, devices, worker_name, settings,
                                redis_client, reporter, stop)
        finally:
            reporter.close()  # its background writer thread ends with the job
            try:  # the last log lines (how it ended); never wait on a database outage
                reporter.try_flush()
            except Exception as exc:
                log.warning("job %s: could not store its last log lines: %s", job_id, exc)


def _run_attempt(job_id: str, attempt: int, spec: dict, devices: list, worker_name: str,
                 settings, redis_client, reporter: JobReporter, stop: StopFlag) -> str:
    device = devices[0]
    log.info("job %s: attempt %d claimed by %s on device %s", job_id, attempt, worker_name,
             device)
    store = get_store()
    result: FitResult | None = None
    try:
        with LeaseHeartbeat(job_id, attempt, settings.lease_seconds, stop), \
                stop_on_sigterm(stop):
            hp = Hyperparameters(**spec["hyperparameters"])
            torch.manual_seed(hp.seed)
            owner = _owner(job_id)  # uploads and init_from: only what the owner may use
            source = dataset_source(spec["dataset"], owner)
            dataset = read_dataset(source, settings, store)
            log.info("job %s: dataset %s loaded: %d train and %d test images of shape %s, "
                     "%d classes", job_id, source.get("name", spec["dataset"]), len(dataset.train),
                     len(dataset.test), "x".join(map(str, dataset.shape)),
                     len(dataset.classes))
            model = models.build(spec["model"], dataset.shape, len(dataset.classes))
            resume, resume_file = load_resume_state(job_id, spec, model, store, reporter)
            reporter.tensorboard = TensorBoardLog.for_job(
                settings.tensorboard_dir, job_id, spec.get("name", ""),
                purge_step=resume["step"] + 1 if resume is not None else None)
            if resume is None and spec.get("init_from"):
                load_initial_weights(model, spec, dataset, store, owner)
            elif resume is not None:
                with session_scope() as session:
                    jobs.set_resumed_from(session, job_id, attempt, resume["epoch"],
                                          resume["step"],
                                          progress_epoch(resume["epoch"], resume["batch"]))
                log.info("job %s: resuming at epoch %d, step %d", job_id, resume["epoch"],
                         resume["step"])
            resume_writer = ResumeWriter(job_id, spec, dataset, store, reporter.pending_points)
            # World size 1 never starts a process group: the plain loop, as always.
            ranks = (process_group(job_id, hp, devices, spec, source, resume_file)
                     if hp.world_size > 1 else nullcontext(None))
            with ranks as dist:
                control = RunControl(
                    reporter, check_every_s=settings.cancel_check_seconds, stop=stop,
                    checkpoint=resume_writer,
                    policy=CheckpointPolicy(settings.checkpoint_every_steps,
                                            settings.checkpoint_every_seconds),
                    on_epoch_end=CheckpointWriter(job_id, spec, dataset, store,
                                                  reporter.record_checkpoint),
                    max_seconds=spec.get("max_runtime_seconds"), dist=dist,
                    device_dataset_fraction=settings.device_dataset_fraction)
                result = fit(model, dataset, hp, device, control, resume_from=resume)
            if result.stop_reason in ("preempt", "db_outage"):
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
        _requeue(job_id, attempt, "interrupted: the worker shut down while it ran",
                 redis_client, settings)
        raise
    finally:
        if reporter.tensorboard is not None:
            reporter.tensorboard.close()
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
    if reason == "preempt":
        return _requeue(job_id, attempt, "graceful stop: the worker is shutting down",
                        redis_client, settings, result.final_metrics)
    if reason == "db_outage":
        log.error("job %s: the database was unreachable for more than %gs; stopped with a "
                  "resume checkpoint (and its unwritten points) for a later attempt", job_id,
                  settings.database_outage_seconds)
        return "interrupted"
    log.warning("job %s: attempt %d lost the job (%s); nothing more is written", job_id,
                attempt, reason)
    return "lost"


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


def load_resume_state(job_id: str, spec: dict, model, store,
                      reporter: JobReporter) -> tuple[dict | None, str | None]:
    """The newest saved training state of this job (mid-epoch file or last epoch
    checkpoint), with its weights loaded into model, and the file's key (a DDP job's other
    ranks load the same); (None, None) for a fresh start."""
    with session_scope() as session:
        rows = ckpt.job_checkpoints(session, job_id)
    candidates = []
    if store.exists(resume_key(job_id)):
        candidates.append(resume_key(job_id))
    if rows:
        candidates.append(rows[0].storage_key)
    best_blob, best_key = None, None
    for key in candidates:
        try:
            with store.open(key) as f:
                blob = ckpt.load(f)
        except (ckpt.CheckpointError, OSError) as exc:
            log.warning("job %s: ignoring unreadable checkpoint %s: %s", job_id, key, exc)
            continue
        if training_state_of(blob) is not None and (
                best_blob is None or blob["step"] > best_blob["step"]):
            best_blob, best_key = blob, key
    if best_blob is None:
        return None, None
    model.load_state_dict(best_blob["model_state"])
    pending = best_blob.get("pending_points") or []
    if pending:  # points the database missed before that attempt stopped
        reporter.metrics([Metric(**p) for p in pending])
    return training_state_of(best_blob), best_key


def _keep_logged_points(reporter: JobReporter) -> None:
    """Points logged before a failure are still data: store them if the database lets us."""
    try:
        reporter.flush()
    except Exception as exc:
        log.warning("could not store the buffered metric points: %s", exc)


def _owner(job_id: str) -> str | None:
    with session_scope() as session:
        return session.scalar(select(Job.owner).where(Job.id == job_id))


def dataset_source(ref: str, owner: str | None = None) -> dict:
    """Where the job's dataset is read from (worker.data.read_dataset): a built-in by name,
    or a ready upload by id that the job's owner may use."""
    if not datasets.is_upload_ref(ref):
        return {"builtin": ref}
    with session_scope() as session:
        try:
            view = datasets.resolve(session, ref, tenant_of(session, owner))
        except datasets.DatasetNotUsable as exc:
            raise JobInputError(exc.message) from None
    return {"upload": ref, "key": view.cache_key, "name": view.name}


def load_initial_weights(model, spec: dict, dataset: ImageDataset, store,
                         owner: str | None = None) -> None:
    """init_from: copy another of the owner's jobs' checkpointed weights into the model."""
    target = ckpt.architecture(spec["model"], dataset.shape, len(dataset.classes))
    with session_scope() as session:
        try:
            row, blob = load_init_from(session, store, spec["init_from"], target,
                                       tenant_of(session, owner))
        except FieldError as exc:
            raise JobInputError(f"init_from: {exc.message}") from None
    model.load_state_dict(blob["model_state"])
    log.info("initialised from job %s epoch %d", spec["init_from"]["job_id"], row.epoch)


def _requeue(job_id: str, attempt: int, reason: str, redis_client, settings,
             final_metrics: dict | None = None) -> str:
    """Hand the job back (queued) for any worker to resume, or end it `cancelled` when its
    cancel was requested meanwhile. Its message is not sent from here: this worker is going
    down and, with a broker like the embedded one, could take the message itself. A reaper
    (of this worker's successor or of any other) re-sends it once enqueue_grace_seconds
    have passed."""
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


def _finish(job_id: str, attempt: int | None, status: JobStatus, redis_client, settings,
            error: str | None = None, final_metrics: dict | None = None) -> str:
    final = finite_values(final_metrics) if final_metrics else None
    fields = {"final_metrics": final, "error": error}

    def record() -> str:
        with session_scope() as session:
            return jobs.transition(session, job_id, status, attempt=attempt, **fields).status

    try:
        # The outcome is known and everything else is stored: a database that goes down
        # just now must not lose it (the task used to raise, and the job waited for its
        # lease to run out and a whole new attempt). Wait as long as the loop would.
        status_now = _through_outage(job_id, f"recording {status.value}", record,
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


def _through_outage(job_id: str, what: str, fn, give_up_after: float | None = None):
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
