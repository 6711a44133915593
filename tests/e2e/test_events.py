"""GET /jobs/{id}/events against real API and worker processes (distributed: Redis stream;
embedded: the database), and against an in-process server for resource checks."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from tests.procs import wait_status

pytestmark = pytest.mark.slow

JOB = {"model": "mlp", "dataset": "digits",
       "hyperparameters": {"epochs": 3, "batch_size": 8, "log_every": 10}}
STEPS_PER_EPOCH = 180  # 1437 / 8 rounded up
LOSS_STEPS = [e * STEPS_PER_EPOCH + b for e in range(3) for b in range(10, STEPS_PER_EPOCH + 1, 10)]


def read_events(base: str, job_id: str, last_event_id: str | None = None,
                stop_after: int | None = None, timeout: float = 120) -> list[tuple[str, dict]]:
    """(id, data) of each event until the server closes the stream (or stop_after events)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events, event_id = [], None
    with httpx.stream("GET", f"{base}/jobs/{job_id}/events", headers=headers,
                      timeout=timeout) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                events.append((event_id, json.loads(line[6:])))
                if stop_after is not None and len(events) >= stop_after:
                    break
    return events


def submit(base: str, job: dict = JOB) -> str:
    resp = httpx.post(f"{base}/jobs", json=job, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def metric_keys(events) -> list[tuple[str, int]]:
    return [(d["name"], d["step"]) for _, d in events if d["type"] == "metric"]


def assert_ids_increase(events) -> None:
    ids = [float(i) for i, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids


def test_history_then_live_then_end_in_order(stack):
    base = stack["base"]
    job_id = submit(base)
    events = read_events(base, job_id)  # connected while queued or just running: mostly live
    assert events[0][1]["type"] == "status" and events[0][1]["job"]["id"] == job_id
    assert events[-1][1]["type"] == "end" and events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["job"]["status"] == "succeeded"
    assert_ids_increase(events)
    keys = metric_keys(events)
    assert len(keys) == len(set(keys))  # no (name, step) twice
    assert [s for n, s in keys if n == "loss"] == LOSS_STEPS
    assert {n for n, _ in keys} >= {"eval_accuracy", "train_loss", "lr"}
    assert any(d["type"] == "progress" for _, d in events)

    again = read_events(base, job_id)  # a finished job: history, then end at once
    assert metric_keys(again) == keys and again[-1][1]["type"] == "end"


def test_reconnecting_with_last_event_id_repeats_nothing_and_misses_nothing(stack):
    base = stack["base"]
    job_id = submit(base)
    seen: list[tuple[str, dict]] = []
    last = None
    for cut in (3, 10, 25, 40):  # during history and during the live phase
        part = read_events(base, job_id, last, stop_after=cut)
        seen += part
        last = part[-1][0]
    seen += read_events(base, job_id, last)
    assert seen[-1][1]["type"] == "end"
    assert_ids_increase(seen)  # across the reconnections too
    keys = metric_keys(seen)
    assert len(keys) == len(set(keys))
    full = metric_keys(read_events(base, job_id))
    assert sorted(keys) == sorted(full)
    assert [s for n, s in keys if n == "loss"] == LOSS_STEPS
    # Any id the server sent is a valid resume point, also one of a non-metric event.
    status_id = next(i for i, d in seen if d["type"] != "metric" and "." in i)
    rest = read_events(base, job_id, status_id)
    after = int(status_id.split(".")[0])
    assert all(int(i.split(".")[0]) >= after for i, d in rest if d["type"] == "metric")


def test_fifty_watchers_of_one_running_job_all_see_every_point(stack):
    base = stack["base"]
    job_id = submit(base, {**JOB, "hyperparameters": {**JOB["hyperparameters"], "epochs": 4}})
    wait_status(base, job_id, {"running"}, timeout=120)

    async def watch() -> list[tuple[str, int]]:
        keys = []
        async with httpx.AsyncClient(timeout=180) as client:
            async with client.stream("GET", f"{base}/jobs/{job_id}/events") as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                        if data["type"] == "metric":
                            keys.append((data["name"], data["step"]))
                        if data["type"] == "end":
                            return keys
        raise AssertionError("stream closed without an end event")

    async def all_watchers():
        return await asyncio.gather(*(watch() for _ in range(50)))

    results = asyncio.run(all_watchers())
    expected = sorted(metric_keys(read_events(base, job_id)))
    assert len(expected) == 4 * (STEPS_PER_EPOCH // 10) + 4 * 6
    for keys in results:
        assert sorted(keys) == expected and len(keys) == len(set(keys))


def test_a_client_that_disconnects_leaves_no_stream_running(tmp_path, monkeypatch):
    """In-process server (uvicorn in a thread) so the open-stream count can be read."""
    import uvicorn

    from api import live
    from api.main import app
    from core import jobs
    from core.db import session_scope, upgrade_schema
    from core.jobspec import JobSpec
    from tests.procs import free_port

    upgrade_schema()
    with session_scope() as session:  # a queued job: its stream stays open, waiting
        job_id = jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved()).id
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        clients = [httpx.Client(timeout=30) for _ in range(5)]
        streams = [c.stream("GET", f"{base}/jobs/{job_id}/events") for c in clients]
        readers = []  # kept: a line iterator that is garbage-collected closes its response
        for s in streams:
            readers.append(s.__enter__().iter_lines())
            next(readers[-1])  # the first event arrived: the stream is open
        assert live.ACTIVE["streams"] == 5
        for s, c in zip(streams, clients):
            s.__exit__(None, None, None)
            c.close()
        deadline = time.monotonic() + 10
        while live.ACTIVE["streams"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.ACTIVE["streams"] == 0
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_embedded_mode_streams_from_the_database(tmp_path):
    from tests.procs import Proc, env_with, free_port, wait_http

    port = free_port()
    env = env_with(TRAINHUB_DATA_DIR=str(tmp_path / "data"), TRAINHUB_DATABASE_URL=None,
                   TRAINHUB_BROKER_URL=None, TRAINHUB_REDIS_URL=None)
    up = Proc(["up", "--port", str(port)], env, tmp_path / "up.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base, up)
        job_id = submit(base)
        first = read_events(base, job_id, stop_after=12)
        events = first + read_events(base, job_id, first[-1][0])
        assert events[-1][1]["type"] == "end" and events[-1][1]["status"] == "succeeded"
        assert [s for n, s in metric_keys(events) if n == "loss"] == LOSS_STEPS
        keys = metric_keys(events)
        assert len(keys) == len(set(keys))
    finally:
        up.stop()
