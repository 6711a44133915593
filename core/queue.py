"""The producer side of the job queue: task names, Celery settings, enqueue, a broker ping.

The API and the worker's reaper send work from here (enqueue_or_fail: the one rule for a
broker that is down when a job or an upload is submitted); the worker's own Celery app (with
its process signals) is built from the same settings in worker/celery_app.py.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import Callable

from celery import Celery
from sqlalchemy.orm import Session

from core.config import Settings, get_settings

log = logging.getLogger(__name__)

RUN_JOB_TASK = "trainhub.run_job"
PROCESS_DATASET_TASK = "trainhub.process_dataset"


class BrokerUnavailable(Exception):
    """A message could not be handed to the broker."""


# How often an idle worker lists the embedded broker's folder (kombu's default: 1 s).
FS_POLLING_INTERVAL_S = 0.1


def celery_config(settings: Settings) -> dict:
    broker = settings.resolved_broker_url
    config = {
        "broker_url": broker,
        "task_default_queue": settings.queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # the database holds the outcome, not a result backend
        # A job message is acknowledged only when the job is done, and handed back if the
        # process running it dies; one job per process at a time, none reserved ahead.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        # Fail a submission fast when the broker is down rather than hang the request.
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.2,
                                      "interval_step": 0.5, "interval_max": 1},
        "broker_transport_options": {
            # Redis re-delivers an unacknowledged message after this: longer than any job.
            "visibility_timeout": settings.broker_visibility_timeout,
        },
    }
    if broker.startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"].update({
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # A job waited 0.3-1 s before a worker saw it; a listing is cheap.
            "polling_interval": FS_POLLING_INTERVAL_S,
        })
        # The filesystem transport has no fan-out for remote control; jobs need none.
        config["worker_enable_remote_control"] = False
        # kombu's own, with atomic message writes (core/fsbroker.py says why).
        config["broker_transport"] = "core.fsbroker:Transport"
        # The folder is the broker, yet kombu wants a host: without one in the URL it warned
        # "No hostname was supplied" at each connection (three at every start).
        config["broker_url"] = "filesystem://localhost/"
    return config


@lru_cache
def producer() -> Celery:
    """A Celery app that only sends: no tasks registered, no worker signals connected."""
    app = Celery("trainhub")
    app.conf.update(celery_config(get_settings()))
    return app


def enqueue(task_name: str, *args, queue: str | None = None) -> None:
    """Send a task by name (to `queue`, else the default queue); BrokerUnavailable when the
    broker cannot be reached."""
    try:
        producer().send_task(task_name, args=list(args), queue=queue)
    except Exception as exc:  # kombu raises several types for an unreachable broker
        raise BrokerUnavailable(str(exc)) from exc


# The error a record keeps when it could not be handed to the broker.
ENQUEUE_FAILED = "could not enqueue: the broker was unreachable"


def enqueue_or_fail(session: Session, task_name: str, record_id: str, *, noun: str,
                    mark_failed: Callable[[str], object], queue: str | None = None,
                    purpose: str = "") -> None:
    """Send the task for a committed record (a job, an upload). The one rule for a broker
    that cannot be reached: the record is marked failed (mark_failed(ENQUEUE_FAILED), then
    committed), and BrokerUnavailable (a 503) names the record that was not queued."""
    try:
        enqueue(task_name, record_id, queue=queue)
    except BrokerUnavailable as exc:
        log.error("%s %s: broker unavailable: %s", noun, record_id, exc)
        mark_failed(ENQUEUE_FAILED)
        session.commit()
        raise BrokerUnavailable(f"broker unavailable; {noun} {record_id} was not "
                                f"queued{purpose}") from exc


def ping_broker(timeout: float = 3) -> None:
    """Raise if the broker cannot be reached within about timeout seconds."""
    with producer().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2,
                               timeout=timeout)
