"""Thin Celery task: take a job id, hand it to the runner."""
from __future__ import annotations

from worker.celery_app import PROCESS_DATASET_TASK, RUN_JOB_TASK, app


@app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job(self, job_id: str) -> str:
    from worker.runner import run

    return run(job_id, worker_name=self.request.hostname or "worker")


@app.task(name=PROCESS_DATASET_TASK, acks_late=True, reject_on_worker_lost=True)
def process_dataset(dataset_id: str) -> str:
    from worker.ingest import process

    return process(dataset_id)
