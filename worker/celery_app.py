"""The worker's Celery app (settings from core.queue) and its process lifecycle: schema
upgrade at start, a fresh engine per pool process, the reaper beside the consumer, and a
graceful stop that hands running jobs back."""
from __future__ import annotations

import logging
import os
import signal

from celery import Celery, bootsteps
from celery.signals import worker_init, worker_process_init, worker_shutting_down
from celery.worker import state as worker_state

from core.config import Settings, get_settings
from core.queue import celery_config

log = logging.getLogger(__name__)


class ReaperStep(bootsteps.StartStopStep):
    """Runs the reaper in the worker's main process."""

    requires = {"celery.worker.components:Pool"}

    def start(self, worker) -> None:
        from worker.reaper import ReaperThread

        self.reaper = _lifecycle["reaper"] = ReaperThread(get_settings())
        self.reaper.start()

    def stop(self, worker) -> None:
        self.reaper.stop()


class PresenceStep(bootsteps.StartStopStep):
    """Keeps the worker's row in `workers` (GET /workers) while it runs."""

    requires = {"celery.worker.components:Pool"}

    def start(self, worker) -> None:
        from worker.presence import Presence

        queues = sorted(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        self.presence = _lifecycle["presence"] = Presence(
            get_settings(), worker.hostname, queues, worker.concurrency,
            on_unwritable=_stop_this_worker)
        self.presence.start()

    def stop(self, worker) -> None:
        self.presence.leave()


_lifecycle: dict = {}


def _stop_this_worker() -> None:
    """A warm shutdown, as `docker stop` asks: no new job, running ones handed back."""
    os.kill(os.getpid(), signal.SIGTERM)


def create_app(settings: Settings | None = None) -> Celery:
    celery = Celery("trainhub", include=["worker.tasks"])
    celery.conf.update(celery_config(settings or get_settings()))
    celery.steps["worker"].add(ReaperStep)
    celery.steps["worker"].add(PresenceStep)
    return celery


app = create_app()


@worker_init.connect
def _migrate_before_consuming(**_kwargs) -> None:
    # The main worker process brings the schema up to date (under a lock) before any task.
    from core.db import upgrade_schema

    upgrade_schema()


@worker_init.connect
def _import_the_training_code(**_kwargs) -> None:
    """What every job imports, imported once before the pool forks: a pool process's first
    job used to spend its first seconds in `running` importing, before its training (and
    its max_runtime_seconds) began; torch.optim's first optimizer imports torch._dynamo,
    1.5-6 s on 2 busy cores. Imports only: no CUDA call, so the pool processes forked
    after this can still use the GPU."""
    import torch._dynamo  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401

    import worker.runner  # noqa: F401


@worker_process_init.connect
def _init_child(**_kwargs) -> None:
    # Connections made before the fork belong to the parent; start from a clean engine.
    from core.db import reset_engine

    reset_engine()


@worker_shutting_down.connect
def _hand_running_jobs_back(sig=None, how=None, **_kwargs) -> None:
    """Celery's warm shutdown would wait for every running job to finish; instead pass the
    signal on to the pool processes running one, whose runner checkpoints at the next step,
    puts the job back in the queue and returns, so the worker exits within seconds. Not to
    the idle ones: the signal killed them (billiard's handler), which the pool logged as an
    ERROR at every clean stop; the pool closes them itself.

    The reaper stops first: a job handed back here must be re-sent by another worker's
    reaper (or this worker's successor's), never by this one, whose consumer may still take
    the message while the shutdown runs and would then train the job to its end."""
    reaper = _lifecycle.get("reaper")
    if reaper is not None:
        reaper.halt()
    presence = _lifecycle.get("presence")
    if presence is not None:  # off GET /workers at once: it takes no new job
        presence.leave()
    pids = {request.worker_pid for request in worker_state.active_requests
            if request.worker_pid}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if pids:
        log.info("shutdown (%s, %s): asked %d pool process(es) to hand their jobs back",
                 sig, how, len(pids))
