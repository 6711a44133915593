"""The worker's Celery app (settings from core.queue) and its process lifecycle."""
from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_init, worker_process_init

from core.config import Settings, get_settings
from core.queue import celery_config

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Celery:
    celery = Celery("trainhub", include=["worker.tasks"])
    celery.conf.update(celery_config(settings or get_settings()))
    return celery


app = create_app()


@worker_init.connect
def _migrate_before_consuming(**_kwargs) -> None:
    # The main worker process brings the schema up to date (under a lock) before any task.
    from core.db import upgrade_schema

    upgrade_schema()


@worker_process_init.connect
def _init_child(**_kwargs) -> None:
    # Connections made before the fork belong to the parent; start from a clean engine.
    from core.db import reset_engine

    reset_engine()
