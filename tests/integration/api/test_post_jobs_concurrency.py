"""POST /jobs from 200 clients of one tenant at once: no 5xx, and the tenant's cap exact.

A real API process (auth on, its own Postgres database, Redis as the broker on a queue no
worker consumes), real HTTP: 200 connections opened first, then 200 submissions released
together. Every request of a tenant goes through its cap check under the tenant's lock;
waiting for that lock must not hold a pooled database connection (the pool ran dry: 500s,
QueuePool timeouts)."""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import create_database
from tests.procs import env_with, start_api
from tests.tenants import make_tenant

pytestmark = pytest.mark.slow

CLIENTS = 200
CAP = 250  # the tenant's active jobs: a first burst fits, a second one meets the cap
JOB = {"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}}


async def burst(base: str, key: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        # Connections first: the submissions then reach the API together.
        await asyncio.gather(*(client.get("/health") for _ in range(n)))
        gate = asyncio.Event()

        async def one(i: int) -> httpx.Response:
            await gate.wait()
            return await client.post("/jobs", json={**JOB, "name": f"burst-{i}"})

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks)


def test_200_submissions_at_once_all_answer_and_the_cap_is_exact(tmp_path: Path):
    db_url = create_database("trainhub_post_burst")
    env = env_with(TRAINHUB_AUTH="on", TRAINHUB_API_KEY=None, TRAINHUB_DATABASE_URL=db_url,
                   TRAINHUB_DATA_DIR=str(tmp_path / "data"),
                   TRAINHUB_QUEUE=f"idle-burst-{uuid.uuid4().hex[:8]}",
                   TRAINHUB_RATE_LIMIT_JOBS_PER_MINUTE="0",
                   TRAINHUB_TENANT_MAX_ACTIVE_JOBS=str(CAP))
    proc, base = start_api(env, tmp_path)
    try:
        key = make_tenant(env, "burst")
        started = time.monotonic()
        first = asyncio.run(burst(base, key, CLIENTS))
        took_first = time.monotonic() - started
        second = asyncio.run(burst(base, key, CLIENTS))
    finally:
        api_log = proc.log()
        proc.stop()

    def summary(answers):
        return Counter(r.status_code for r in answers)

    print(f"\nfirst burst {took_first:.2f} s: {summary(first)}; second: {summary(second)}")
    # Within the cap every submission is taken.
    assert summary(first) == {201: CLIENTS}, [r.text for r in first if r.status_code != 201][:3]
    # Past it, exactly the slots left are taken; the others are the cap's 429.
    assert summary(second) == {201: CAP - CLIENTS, 429: 2 * CLIENTS - CAP}, summary(second)
    refused = next(r for r in second if r.status_code == 429)
    assert "TRAINHUB_TENANT_MAX_ACTIVE_JOBS" in refused.json()["detail"]
    assert refused.headers["retry-after"].isdigit()
    assert "Traceback" not in api_log, api_log[-5000:]
    assert not re.search(r'HTTP/1\.1" 5\d\d', api_log), api_log[-5000:]

    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT count(*), count(*) FILTER (WHERE enqueued_at IS NOT NULL) "
                            "FROM jobs").fetchall()
    assert rows == [(CAP, CAP)]  # every job taken was queued, none beyond the cap
    created = {r.json()["id"] for r in (*first, *second) if r.status_code == 201}
    assert len(created) == CAP
