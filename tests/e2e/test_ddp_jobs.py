"""A DDP job (world_size 2, gloo) through the API and a real worker: its rank 0 runs in a
Celery prefork pool process (daemonic), which starts the helper rank as a subprocess."""
from __future__ import annotations

import httpx
import pytest

from tests.procs import wait_status

pytestmark = pytest.mark.slow

DDP_JOB = {"model": "mlp", "dataset": "digits", "device": "cpu",
           "hyperparameters": {"epochs": 2, "batch_size": 32, "lr": 0.05, "log_every": 10,
                               "world_size": 2}}


def test_a_two_process_job_trains_and_each_rank_says_it_started(stack):
    base = stack["base"]
    resp = httpx.post(f"{base}/jobs", json=DDP_JOB, timeout=10)
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]

    done = wait_status(base, job_id)
    assert done["status"] == "succeeded", done
    assert done["metrics"]["eval_accuracy"] >= 0.9
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 2 * 45

    points = httpx.get(f"{base}/jobs/{job_id}/metrics", params={"name": "loss"}).json()
    steps = [p["step"] for p in points["metrics"]]
    assert steps == [10, 20, 30, 40, 55, 65, 75, 85]  # log_every counts each epoch's steps
    lines = httpx.get(f"{base}/jobs/{job_id}/logs", params={"limit": 1000}).json()["lines"]
    text = "\n".join(line["message"] for line in lines)
    assert "rank 0/2 started on cpu" in text and "rank 1/2 started on cpu" in text, text

