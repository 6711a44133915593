"""Distributed mode: Postgres + Redis broker + Redis live events, API and worker as separate
processes started at the same moment on an empty database."""
from __future__ import annotations


import httpx
import psycopg
import pytest
import redis

from core.events import stored_events, stream_key
from tests.procs import wait_status, wait_until

pytestmark = pytest.mark.slow

ACCEPTANCE_JOB = {"model": "lenet", "dataset": "digits",
                  "hyperparameters": {"epochs": 3, "batch_size": 4, "optimizer": "adam",
                                      "lr": 0.001, "log_every": 100}}
LONG_JOB = {"model": "lenet", "dataset": "fake", "hyperparameters": {"epochs": 500, "log_every": 25}}


def submit(base: str, body: dict) -> dict:
    resp = httpx.post(f"{base}/jobs", json=body, timeout=10)
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == f"/jobs/{resp.json()['id']}"
    return resp.json()


def test_health_reports_every_backing_service(stack):
    body = httpx.get(f"{stack['base']}/health").json()
    assert body == {"status": "ok", "database": "ok", "broker": "ok", "events": "ok"}


def test_acceptance_job_lands_in_postgres_and_redis(stack):
    base = stack["base"]
    job = submit(base, ACCEPTANCE_JOB)
    done = wait_status(base, job["id"])
    assert done["status"] == "succeeded", done
    assert done["worker"] == "w1@test" and done["device"] == "cpu"
    assert done["metrics"]["eval_accuracy"] >= 0.90
    total = done["progress"]["total_steps"]
    assert total == 3 * 360 and done["progress"]["step"] == total

    page = httpx.get(f"{base}/jobs/{job['id']}/metrics", params={"name": "loss"}).json()
    points = page["metrics"]
    per_epoch = (total // 3) // 100
    assert len(points) == 3 * per_epoch
    assert [p["step"] for p in points] == sorted(p["step"] for p in points)
    assert [(p["epoch"], p["batch"]) for p in points] == [
        (e, b) for e in (1, 2, 3) for b in (100, 200, 300)]
    assert page["next_since_step"] is None

    # The same points are rows in Postgres ...
    with psycopg.connect(stack["db_url"]) as conn:
        rows = conn.execute("SELECT step, value FROM metric_points WHERE job_id = %s AND "
                            "name = 'loss' ORDER BY step", (job["id"],)).fetchall()
    assert [(r[0], pytest.approx(r[1])) for r in rows] == [(p["step"], p["value"]) for p in points]
    # ... and events on the job's Redis stream, ending with the terminal status.
    client = redis.Redis.from_url(stack["env"]["TRAINHUB_REDIS_URL"])
    events = stored_events(client, job["id"])
    loss_events = [e for e in events if e["type"] == "metric" and e["name"] == "loss"]
    assert [e["step"] for e in loss_events] == [p["step"] for p in points]
    statuses = [e["status"] for e in events if e["type"] == "status"]
    assert statuses == ["running", "succeeded"]
    assert client.ttl(stream_key(job["id"])) > 0  # kept for a day, not forever


def test_cancel_running_then_queued_job(stack):
    base = stack["base"]
    running = submit(base, LONG_JOB)
    wait_status(base, running["id"], {"running"}, timeout=60)
    # One worker process, one job at a time: this one waits in the queue.
    queued = submit(base, LONG_JOB)
    assert httpx.get(f"{base}/jobs/{queued['id']}").json()["status"] == "queued"

    resp = httpx.post(f"{base}/jobs/{queued['id']}/cancel")
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled"

    wait_until(lambda: httpx.get(f"{base}/jobs/{running['id']}/metrics",
                                 params={"name": "loss"}).json()["metrics"], timeout=60)
    resp = httpx.post(f"{base}/jobs/{running['id']}/cancel")
    assert resp.status_code == 202 and resp.json()["cancel_requested"] is True
    done = wait_status(base, running["id"], timeout=60)
    assert done["status"] == "cancelled"
    kept = httpx.get(f"{base}/jobs/{running['id']}/metrics").json()["metrics"]
    assert kept, "a cancelled job keeps the metrics it logged"

    # Finished jobs cannot be cancelled again, and the queued one never ran.
    assert httpx.post(f"{base}/jobs/{running['id']}/cancel").status_code == 409
    assert httpx.post(f"{base}/jobs/{queued['id']}/cancel").status_code == 409
    # The worker picks up the cancelled message and drops it, then keeps serving.
    stack["worker"].wait_for_log(f"job {queued['id']}: not claimed", timeout=60)
    later = httpx.get(f"{base}/jobs/{queued['id']}").json()
    assert later["status"] == "cancelled" and later["started_at"] is None


def test_failing_job_reports_why_and_worker_keeps_serving(stack):
    base = stack["base"]
    failing = submit(base, {"model": "lenet", "dataset": "cifar10"})
    done = wait_status(base, failing["id"])
    assert done["status"] == "failed"
    assert "cifar-10-batches-py" in done["error"] and "data_batch_1" in done["error"]
    assert "Traceback" not in done["error"]

    ok = submit(base, {"model": "mlp", "dataset": "digits",
                       "hyperparameters": {"epochs": 1, "batch_size": 32, "log_every": 10}})
    assert wait_status(base, ok["id"])["status"] == "succeeded"


def test_a_cuda_job_with_only_cpu_workers_stays_queued_and_says_why(stack):
    """Routing: a cuda job goes to <queue>.gpu, which only a GPU worker consumes; with CPU
    workers alone it waits, saying so, while cpu and auto jobs run."""
    import torch

    base, queue = stack["base"], stack["env"]["TRAINHUB_QUEUE"]
    workers = httpx.get(f"{base}/workers", timeout=10).json()["workers"]
    w1 = next(w for w in workers if w["name"] == "w1@test")
    has_gpu = torch.cuda.is_available()
    assert w1["queues"] == sorted([f"{queue}.{'gpu' if has_gpu else 'cpu'}", queue])
    assert w1["devices"][0]["type"] == ("cuda" if has_gpu else "cpu")
    assert w1["concurrency"] == 1 and w1["memory_bytes"] > 0

    job = submit(base, {"model": "lenet", "dataset": "digits", "device": "cuda",
                        "hyperparameters": {"epochs": 1, "log_every": 100}})
    assert job["queue"] == f"{queue}.gpu"
    if has_gpu:  # the same test on a GPU box: the job runs there
        done = wait_status(base, job["id"])
        assert done["status"] == "succeeded" and done["device"].startswith("cuda")
        return
    assert job["status"] == "queued"
    assert job["waiting"] == (f"waiting for a GPU worker: no running worker consumes queue "
                              f"'{queue}.gpu'")
    for device in ("cpu", "auto"):
        other = submit(base, {"model": "mlp", "dataset": "digits", "device": device,
                              "hyperparameters": {"epochs": 1, "batch_size": 32,
                                                  "log_every": 10}})
        assert other["queue"] == (f"{queue}.cpu" if device == "cpu" else queue)
        assert other["waiting"] is None
        assert wait_status(base, other["id"])["status"] == "succeeded"
    still = httpx.get(f"{base}/jobs/{job['id']}", timeout=10).json()
    assert still["status"] == "queued" and still["attempts"] == 0
    assert "GPU worker" in still["waiting"]
    assert httpx.post(f"{base}/jobs/{job['id']}/cancel", timeout=10).status_code == 202


def test_a_second_worker_is_listed_while_it_runs_and_drops_off_when_it_stops(stack):
    from tests.procs import start_worker

    def listed() -> set[str]:
        return {w["name"] for w in httpx.get(f"{base}/workers", timeout=10).json()["workers"]}

    base = stack["base"]
    worker = start_worker(stack["env"], stack["tmp"], name="w-extra")
    try:
        wait_until(lambda: {"w1@test", "w-extra@test"} <= listed(), timeout=60)
    finally:
        assert worker.stop() == 0
    assert "w-extra@test" not in listed() and "w1@test" in listed()