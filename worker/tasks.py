"""Thin Celery tasks: take an id, hand it to the code that does the work.

acks_late and reject_on_worker_lost come from the app's settings (core.queue)."""
from __future__ import annotations

from core.queue import PROCESS_DATASET_TASK, RUN_JOB_TASK
from worker.celery_app import app


@app.task(name=RUN_JOB_TASK, bind=True)
def run_job(self, job_id: str) -> str:
    from worker.runner import run
    from worker.sweep_steps import after_attempt

    status = run(job_id, worker_name=self.request.hostname or "worker")
    after_attempt(job_id, status)  # a sweep's trial: its freed slot is used at once
    return status


@app.task(name=PROCESS_DATASET_TASK)
def process_dataset(dataset_id: str) -> str:
    from core.uploads.ingest import process

    return process(dataset_id)
