"""api.live.EventStream through a database outage, in process: the test database behind a
TCP relay that the test cuts (every connection reset, new ones refused, as when the server
stops) and restores, and the events Redis. The stream waits, pinging, and resumes after its
last point; it never raises into a response that has started."""
from __future__ import annotations

import logging
import os
import socket
import threading

import anyio
import pytest
from sqlalchemy.engine import make_url

from api.live import PAGE, EventStream, redis_client_factory
from core import events, jobs
from core.config import get_settings
from core.db import reset_engine, session_scope, upgrade_schema
from core.jobspec import JobSpec
from core.metrics import store as metric_store
from core.states import JobStatus
from tests.procs import free_port


class Relay:
    """127.0.0.1:port to the database server; cut() closes every connection through it and
    stops listening, restore() listens on the same port again."""

    def __init__(self, host: str, port: int):
        self.target, self.port = (host, port), free_port()
        self.sockets: list[socket.socket] = []
        self.restore()

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        for sock in [self.listener, *self.sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() or recv()
            except OSError:
                pass
            sock.close()
        self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


@pytest.fixture
def relay():
    """This process's database connections go through a Relay for the test."""
    before = os.environ["TRAINHUB_DATABASE_URL"]
    url = make_url(get_settings().resolved_database_url)
    relay = Relay(url.host, url.port or 5432)
    os.environ["TRAINHUB_DATABASE_URL"] = url.set(port=relay.port).render_as_string(
        hide_password=False)
    get_settings.cache_clear()
    reset_engine()
    try:
        yield relay
    finally:
        relay.cut()
        os.environ["TRAINHUB_DATABASE_URL"] = before
        get_settings.cache_clear()
        reset_engine()


def running_job() -> str:
    with session_scope() as session:
        job_id = jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved()).id
        jobs.claim(session, job_id, "w@test", "cpu", lease_seconds=60)
        return job_id


def store_points(job_id: str, steps: range) -> list[int]:
    """Stores loss points at these steps, as the worker would; their row ids."""
    with session_scope() as session:
        inserted = metric_store.insert_metrics(session, job_id, [
            {"name": "loss", "epoch": 0, "batch": s, "step": s, "value": 1.0 / s} for s in steps])
    return sorted(inserted.ids.values())


def publish_points(redis, job_id: str, ids: list[int], prev: int) -> None:
    points = [{"id": i, "name": "loss", "epoch": 0, "batch": 0, "step": 0, "value": 0.5}
              for i in ids]
    events.publish(redis, job_id, events.metrics_entries(points, prev))


def finish(redis, job_id: str) -> None:
    with session_scope() as session:
        jobs.transition(session, job_id, JobStatus.succeeded)
    events.publish(redis, job_id, [{"type": "status", "status": "succeeded"}])


class Reader:
    """Takes a stream's frames one at a time, keeping them (an exception fails the test)."""

    def __init__(self, stream: EventStream):
        self.frames = stream.events()
        self.ids: list[str] = []
        self.kinds: list[str] = []
        self.metric_ids: list[int] = []

    async def next(self) -> str:
        with anyio.fail_after(60):
            frame = await self.frames.__anext__()
        if frame.startswith(":"):
            self.kinds.append("ping")
            return "ping"
        head, data = frame.split("\n")[:2]
        self.ids.append(head.removeprefix("id: "))
        kind = data.split('"type":"', 1)[1].split('"', 1)[0]
        self.kinds.append(kind)
        if kind == "metric":
            self.metric_ids.append(int(self.ids[-1]))
        return kind

    async def until(self, kind: str) -> None:
        while await self.next() != kind:
            pass

    def assert_ids_increase(self) -> None:
        values = [float(i) for i in self.ids]
        assert values == sorted(values) and len(set(values)) == len(values), self.ids


def redis_clients():
    url = get_settings().redis_url
    return redis_client_factory(url)(), events.connect(url)


def test_history_cut_by_an_outage_resumes_after_its_last_point(relay):
    job_id = running_job()
    stored = store_points(job_id, range(1, PAGE + 1001))  # two pages of history
    live_redis, redis = redis_clients()

    async def main():
        reader = Reader(EventStream(job_id, None, live_redis))
        assert await reader.next() == "status"
        while len(reader.metric_ids) < PAGE:  # the first page, read before the outage
            await reader.next()
        relay.cut()
        assert await reader.next() == "ping"  # the second page waits for the database
        assert await reader.next() == "ping"
        relay.restore()
        await reader.until("progress")  # the job again, and the rest of its history
        more = store_points(job_id, range(PAGE + 1001, PAGE + 1011))
        publish_points(redis, job_id, more, prev=stored[-1])
        finish(redis, job_id)
        await reader.until("end")
        await live_redis.aclose()
        return reader, more

    reader, more = anyio.run(main)
    assert reader.metric_ids == stored + more  # each once, in order
    reader.assert_ids_increase()
    assert reader.kinds.count("status") == 2 and reader.kinds[-1] == "end"


def test_a_gap_met_during_an_outage_is_filled_once_the_database_is_back(relay):
    job_id = running_job()
    stored = store_points(job_id, range(1, 11))
    live_redis, redis = redis_clients()

    async def main():
        reader = Reader(EventStream(job_id, None, live_redis))
        await reader.until("progress")  # history read: live from here
        unpublished = store_points(job_id, range(11, 21))  # Redis missed these
        published = store_points(job_id, range(21, 31))
        relay.cut()
        publish_points(redis, job_id, published, prev=unpublished[-1])
        assert await reader.next() == "ping"  # the gap cannot be filled yet
        relay.restore()
        finish(redis, job_id)
        await reader.until("end")
        await live_redis.aclose()
        return reader, unpublished + published

    reader, later = anyio.run(main)
    assert reader.metric_ids == stored + later
    reader.assert_ids_increase()


def test_any_other_failure_closes_the_stream_cleanly(caplog):
    """Not an outage (the job was deleted): a clean close, which a client resumes from, with
    the cause in the log, rather than an exception into a response that has started."""
    async def main():
        return [frame async for frame in EventStream("0" * 32, None).events()]

    with caplog.at_level(logging.ERROR, logger="api.live"):
        assert anyio.run(main) == []
    assert "event stream failed" in caplog.text
