"""Acceptance R4: a burst of submissions against a real API and two real workers
(distributed mode: Postgres, Redis broker, separate processes) runs every job exactly once.

300 tiny jobs are POSTed by a load generator keeping 50 requests in flight; then, once no
job is queued or running: exactly 300 rows, every one succeeded on its first attempt, with
each metric point written once."""
from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import psycopg
import pytest

from tests.conftest import create_database
from tests.procs import Proc, env_with, free_port, wait_http

pytestmark = pytest.mark.slow

JOBS = 300
IN_FLIGHT = 50
# The brief's tiny job (23 mini-batches of the digits train split), with a `loss` point
# every 10 mini-batches so that each job also writes some within its epoch.
TINY = {"model": "mlp", "dataset": "digits",
        "hyperparameters": {"epochs": 1, "batch_size": 64, "log_every": 10}}
LOSS_POINTS = 2  # at mini-batches 10 and 20 of 23
EPOCH_METRICS = {"train_loss", "train_accuracy", "eval_loss", "eval_accuracy",
                 "samples_per_second", "lr"}
DRAIN_TIMEOUT = 240


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("submissions")
    db_url = create_database("trainhub_submissions")
    env = env_with(TRAINHUB_DATABASE_URL=db_url, TRAINHUB_DATA_DIR=str(tmp / "data"),
                   TRAINHUB_QUEUE=f"burst-{uuid.uuid4().hex[:8]}")
    port = free_port()
    procs = [Proc(["api", "--port", str(port)], env, tmp / "api.log")]
    procs += [Proc(["worker", "--name", f"w{n}@burst"], env, tmp / f"worker-{n}.log")
              for n in (1, 2)]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base, procs[0])
        for worker in procs[1:]:
            worker.wait_for_log(" ready.")
        yield {"base": base, "db_url": db_url, "procs": procs}
    finally:
        for proc in procs:
            proc.stop()


async def submit_all(base: str) -> list[httpx.Response]:
    gate = asyncio.Semaphore(IN_FLIGHT)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        async def one(n: int) -> httpx.Response:
            async with gate:
                # Half of them with an Idempotency-Key: the keyed path under load too.
                headers = {"Idempotency-Key": f"burst-{n}"} if n % 2 else {}
                return await client.post("/jobs", json={**TINY, "name": f"burst-{n}"},
                                         headers=headers)

        return await asyncio.gather(*(one(n) for n in range(JOBS)))


def rows(db_url: str, query: str):
    with psycopg.connect(db_url) as conn:
        return conn.execute(query).fetchall()


def test_a_burst_of_300_submissions_runs_each_job_exactly_once(stack):
    started = time.monotonic()
    answers = asyncio.run(submit_all(stack["base"]))
    submitted = time.monotonic() - started
    assert [r.status_code for r in answers] == [201] * JOBS, {
        r.status_code: r.text[:200] for r in answers if r.status_code != 201}
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == JOBS

    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        (active,), = rows(stack["db_url"],
                          "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
        if active == 0:
            break
        for proc in stack["procs"]:
            assert proc.popen.poll() is None, proc.log()[-3000:]
        assert time.monotonic() < deadline, f"{active} jobs still queued or running"
        time.sleep(1)
    drained = time.monotonic() - started
    print(f"\n{JOBS} submissions in {submitted:.1f} s; all finished after {drained:.1f} s")

    jobs = rows(stack["db_url"], "SELECT id, status, attempts, step, total_steps, error "
                                 "FROM jobs")
    assert len(jobs) == JOBS and {j[0] for j in jobs} == ids
    not_ok = [j for j in jobs if j[1] != "succeeded" or j[2] != 1 or j[3] != j[4]]
    assert not not_ok, not_ok[:5]

    counts = rows(stack["db_url"], "SELECT job_id, name, count(*), count(DISTINCT step) "
                                   "FROM metric_points GROUP BY job_id, name")
    per_job: dict[str, dict[str, int]] = {job_id: {} for job_id in ids}
    for job_id, name, n, steps in counts:
        assert n == steps, (job_id, name, n, steps)  # no step written twice
        per_job[job_id][name] = n
    expected = {**{name: 1 for name in EPOCH_METRICS}, "loss": LOSS_POINTS}
    wrong = {job_id: names for job_id, names in per_job.items() if names != expected}
    assert not wrong, list(wrong.items())[:3]

    checkpoints = rows(stack["db_url"], "SELECT job_id, count(*) FROM checkpoints "
                                        "GROUP BY job_id")
    assert sorted(n for _, n in checkpoints) == [1] * JOBS
