"""Runs one job: claim it, build data and model, call the loop, record how it ended."""
from __future__ import annotations

import logging

import torch

import models
from core import checkpoints as ckpt
from core import datasets, events, jobs
from core.artifacts import get_store
from core.config import get_settings
from core.db import session_scope
from core.errors import FieldError
from core.imagedata import ImageDataset, read_tensor_file
from core.init_from import load_init_from
from core.jobspec import Hyperparameters
from core.metrics import finite_values
from core.states import InvalidTransition, JobStatus
from core.tables import Job
from worker.checkpoints import CheckpointWriter
from worker.data import DatasetUnavailable, load_dataset
from worker.loop import fit, resolve_device
from worker.sink import JobReporter

log = logging.getLogger(__name__)


def run(job_id: str, worker_name: str) -> str:
    """Returns the job's final status, or 'skipped' when this delivery is not ours to run."""
    settings = get_settings()
    redis_client = events.connect(settings.redis_url) if settings.redis_url else None
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            log.warning("job %s: no such job, dropping the message", job_id)
            return "skipped"
        spec = dict(job.spec)
    try:
        device = resolve_device(spec.get("device", "auto"))
    except RuntimeError as exc:
        return _finish(job_id, JobStatus.failed, redis_client, settings, error=str(exc))
    try:
        with session_scope() as session:
            jobs.claim(session, job_id, worker_name, str(device), settings.lease_seconds)
    except InvalidTransition as exc:
        log.info("job %s: not claimed (%s)", job_id, exc)
        return "skipped"
    events.publish_or_warn(redis_client, job_id, [{"type": "status",
                                                   "status": JobStatus.running.value,
                                                   "worker": worker_name,
                                                   "device": str(device)}])
    log.info("job %s: running on %s (%s)", job_id, device, worker_name)
    reporter = JobReporter(job_id, settings, redis_client)
    store = get_store()
    try:
        hp = Hyperparameters(**spec["hyperparameters"])
        torch.manual_seed(hp.seed)
        dataset = load_job_dataset(spec["dataset"], settings, store)
        model = models.build(spec["model"], dataset.shape, len(dataset.classes))
        if spec.get("init_from"):
            load_initial_weights(model, spec, dataset, store)
        writer = CheckpointWriter(job_id, spec, dataset, store, settings.checkpoint_keep)
        result = fit(model, dataset, hp, device, reporter, settings.cancel_check_seconds,
                     on_epoch_end=writer)
        reporter.flush()
    except (DatasetUnavailable, JobInputError) as exc:
        return _finish(job_id, JobStatus.failed, redis_client, settings, error=str(exc))
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _keep_logged_points(reporter)
        return _finish(job_id, JobStatus.failed, redis_client, settings,
                       error=f"{type(exc).__name__}: {exc}")
    except BaseException:
        # The pool turns SIGTERM into SystemExit wherever the loop is: record the end, then
        # let the process go down as asked.
        _keep_logged_points(reporter)
        _finish(job_id, JobStatus.failed, redis_client, settings,
                error="interrupted: the worker shut down while the job was running")
        raise
    status = JobStatus.cancelled if result.stopped else JobStatus.succeeded
    return _finish(job_id, status, redis_client, settings, final_metrics=result.final_metrics)


def _keep_logged_points(reporter: JobReporter) -> None:
    """Points logged before a failure are still data: store them if the database lets us."""
    try:
        reporter.flush()
    except Exception as exc:
        log.warning("could not store the buffered metric points: %s", exc)


class JobInputError(Exception):
    """Something the job asked for cannot be used; the message is for the user."""


def load_job_dataset(ref: str, settings, store) -> ImageDataset:
    """A built-in by name (tensor cache after the first read), or a ready upload by id."""
    if not datasets.is_upload_ref(ref):
        return load_dataset(ref, settings.resolved_dataset_root, settings.cache_dir,
                            settings.allow_download)
    with session_scope() as session:
        try:
            view = datasets.resolve(session, ref)
        except datasets.DatasetNotUsable as exc:
            raise JobInputError(exc.message) from None
    with store.open(view.cache_key) as f:
        return read_tensor_file(ref, f)


def load_initial_weights(model, spec: dict, dataset: ImageDataset, store) -> None:
    """init_from: copy another job's checkpointed weights into the new model."""
    target = ckpt.architecture(spec["model"], dataset.shape, len(dataset.classes))
    with session_scope() as session:
        try:
            row, blob = load_init_from(session, store, spec["init_from"], target)
        except FieldError as exc:
            raise JobInputError(f"init_from: {exc.message}") from None
    model.load_state_dict(blob["model_state"])
    log.info("initialised from job %s epoch %d", spec["init_from"]["job_id"], row.epoch)


def _finish(job_id: str, status: JobStatus, redis_client, settings, error: str | None = None,
            final_metrics: dict | None = None) -> str:
    final = finite_values(final_metrics) if final_metrics else None
    fields = {"final_metrics": final, "error": error}
    try:
        with session_scope() as session:
            job = jobs.transition(session, job_id, status, **fields)
            status_now = job.status
    except InvalidTransition as exc:
        # e.g. cancelled while queued and then failed on delivery: the first end stands.
        log.info("job %s: %s", job_id, exc)
        return exc.current.value
    log.info("job %s: %s%s", job_id, status_now, f" ({error})" if error else "")
    events.publish_or_warn(redis_client, job_id, [{"type": "status", "status": status_now,
                                                   "error": error, "final_metrics": final}],
                           expire_seconds=settings.events_ttl_seconds)
    return status_now
