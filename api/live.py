"""A job's live event stream for GET /jobs/{id}/events: history from the database, then
live events from the job's Redis stream (or, embedded, from the database), then `end`.

Event ids follow the database's order of points: a metric event's id is its point's row
id; any other event gets `<last point id>.<n>` (six digits), so ids are decimals that
strictly increase per stream, and the integer part of any id sent is a resume position:
`Last-Event-ID` resumes with every point after it, none repeated. A point is only ever
sent in id order; a gap in the Redis stream (an outage while the worker published) is
filled from the database, which the worker's events say how far it has written.

A database outage does not break a stream: it goes on reading Redis while the database is
down, and a read it cannot do without (history, a gap) waits for the database with a
ping every try, then the stream resumes after its last point as a reconnection with
`Last-Event-ID` would. Any other failure closes it cleanly (a broken chunked response
helps no client), to be resumed the same way.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import AsyncIterator, Callable

import anyio
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.prometheus import EVENT_STREAMS
from api.schemas import JobPublic, MetricPointPublic
from core.db import is_outage, session_scope
from core.events import decode, stream_key
from core.metrics.pages import points_after
from core.states import JobStatus
from core.tables import Job

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
EMBEDDED_POLL_S = 0.5
DB_RETRY_S = (0.5, 5.0)  # while the database is down: the first wait, doubling to the last
PAGE = 5000
ACTIVE = {"streams": 0}  # open event streams in this process (tests check it drops to 0)


def parse_last_event_id(value: str | None) -> tuple[int, int]:
    """(point id, event number after it) a Last-Event-ID stands for; (0, 0), from the
    start, when absent or foreign."""
    head, _, tail = (value or "").strip().partition(".")
    if not (head.isdigit() and len(head) < 19):
        return 0, 0
    return int(head), int(tail) if tail.isdigit() and len(tail) <= 6 else 0


def database_down(exc: BaseException) -> bool:
    """An error that passes once the database answers again (unreachable, or every pooled
    connection busy), as opposed to a statement it rejected."""
    return is_outage(exc) or isinstance(exc, PoolTimeout)


def _job(job_id: str) -> JobPublic | None:
    with session_scope() as session:
        row = session.get(Job, job_id)
        return JobPublic.from_row(row) if row is not None else None


def _points_after(job_id: str, after: int, up_to: int | None = None) -> list[tuple[int, dict]]:
    with session_scope() as session:
        rows = points_after(session, job_id, after, up_to, PAGE)
        return [(r.id, {"type": "metric",
                        **MetricPointPublic.from_row(r).model_dump(mode="json")}) for r in rows]


class EventStream:
    """One client's stream: numbering, the point position, and the history/live logic."""

    def __init__(self, job_id: str, last_event_id: str | None, redis=None):
        self.job_id = job_id
        # Numbering continues after the client's last id: ids never go back, even though a
        # resumed stream starts again with the job's state.
        self.last_point, self.sub = parse_last_event_id(last_event_id)
        self.redis = redis

    def _frame(self, payload: dict, point_id: int | None = None) -> str:
        if point_id is not None:
            self.last_point, self.sub = point_id, 0
            event_id = str(point_id)
        else:
            self.sub += 1
            event_id = f"{self.last_point}.{self.sub:06d}"
        return f"id: {event_id}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"

    async def _history(self, up_to: int | None = None) -> AsyncIterator[str]:
        """Every stored point after the last one sent (up to `up_to`), in id order."""
        while True:
            page = await anyio.to_thread.run_sync(_points_after, self.job_id, self.last_point,
                                                  up_to)
            for point_id, payload in page:
                yield self._frame(payload, point_id)
            if len(page) < PAGE:
                return

    async def _status(self, job: JobPublic, kind: str = "status") -> str:
        return self._frame({"type": kind, "status": job.status.value,
                            "job": job.model_dump(mode="json")})

    def _progress(self, job: JobPublic) -> str:
        return self._frame({"type": "progress", **job.progress.model_dump()})

    async def events(self) -> AsyncIterator[str]:
        """The stream, resumed in place after a database outage; never an exception: the
        response has started, so one would only break it (and log that it could not be
        turned into a 503)."""
        ACTIVE["streams"] += 1
        EVENT_STREAMS.inc()
        wait_s, down_since = DB_RETRY_S[0], None
        try:
            while True:
                try:
                    async for frame in self._from_last_point():
                        if down_since is not None:
                            log.info("job %s: event stream resumed after %.1fs", self.job_id,
                                     anyio.current_time() - down_since)
                            wait_s, down_since = DB_RETRY_S[0], None
                        yield frame
                    return
                except Exception as exc:
                    if not database_down(exc):
                        log.exception("job %s: event stream failed; closed (Last-Event-ID "
                                      "resumes it)", self.job_id)
                        return
                    if down_since is None:
                        down_since = anyio.current_time()
                        log.warning("job %s: database unavailable; the event stream waits "
                                    "for it: %s", self.job_id, str(exc).splitlines()[0][:200])
                await asyncio.sleep(wait_s)
                wait_s = min(wait_s * 2, DB_RETRY_S[1])
                yield ": ping\n\n"
        finally:
            ACTIVE["streams"] -= 1
            EVENT_STREAMS.dec()

    async def _from_last_point(self) -> AsyncIterator[str]:
        """The job's state, the stored points after the last one sent, then live."""
        # Where the live stream stands before history is read: everything after it is
        # read live, and what overlaps with the history is recognised by its id.
        position = await self._stream_tail() if self.redis is not None else None
        job = await anyio.to_thread.run_sync(_job, self.job_id)
        yield await self._status(job)
        async for frame in self._history():
            yield frame
        yield self._progress(job)
        if JobStatus(job.status).is_terminal:
            yield await self._end()
            return
        live = self._redis_live(position) if self.redis is not None else self._polled_live()
        async for frame in live:
            yield frame

    async def _end(self) -> str:
        """The points that are still missing, then `end` with the job as it finished."""
        job = await anyio.to_thread.run_sync(_job, self.job_id)
        frames = [frame async for frame in self._history()]
        return "".join(frames) + await self._status(job, "end")

    async def _stream_tail(self) -> str:
        try:
            last = await self.redis.xrevrange(stream_key(self.job_id), count=1)
        except Exception as exc:  # Redis down: the database still has everything
            log.warning("job %s: live stream unavailable: %s", self.job_id, exc)
            return "0-0"
        return last[0][0].decode() if last else "0-0"

    async def _redis_live(self, position: str) -> AsyncIterator[str]:
        """XREAD with blocking on the job's stream: one Redis read per client, no database
        query except a status check at each heartbeat and a gap fill."""
        key = stream_key(self.job_id)
        while True:
            try:
                reply = await self.redis.xread({key: position}, count=500,
                                               block=int(HEARTBEAT_S * 1000))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: heartbeat, poll the db, try again
                log.warning("job %s: reading the live stream failed: %s", self.job_id, exc)
                reply = None
                await asyncio.sleep(1.0)
            if not reply:
                yield ": ping\n\n"
                try:
                    job = await anyio.to_thread.run_sync(_job, self.job_id)
                except Exception as exc:
                    if not database_down(exc):
                        raise
                    continue  # Redis still serves; the next heartbeat checks again
                async for frame in self._history():  # whatever Redis missed
                    yield frame
                if JobStatus(job.status).is_terminal:
                    yield await self._end()
                    return
                continue
            for entry_id, fields in reply[0][1]:
                position = entry_id.decode()
                for payload in decode(fields[b"data"]):
                    async for frame in self._live_event(payload):
                        yield frame
                    if payload.get("type") == "status" and payload.get("status") in TERMINAL:
                        yield await self._end()
                        return

    async def _live_event(self, payload: dict) -> AsyncIterator[str]:
        kind = payload.get("type")
        if kind == "metric":
            point_id, written_before = payload.pop("id", None), payload.pop("prev", None)
            if point_id is None:  # an event without ids: the database says what is new
                async for frame in self._history():
                    yield frame
                return
            if written_before is not None and written_before > self.last_point:
                async for frame in self._history(up_to=written_before):  # a gap: fill it
                    yield frame
            if point_id > self.last_point:
                yield self._frame(payload, point_id)
        elif kind == "status":
            if payload.get("status") not in TERMINAL:  # `end` carries the terminal one
                yield self._frame(payload)
        else:
            yield self._frame(payload)

    async def _polled_live(self) -> AsyncIterator[str]:
        """Embedded mode (no Redis): the database, read every EMBEDDED_POLL_S."""
        last_beat = anyio.current_time()
        seen = None
        while True:
            await asyncio.sleep(EMBEDDED_POLL_S)
            job = await anyio.to_thread.run_sync(_job, self.job_id)
            async for frame in self._history():
                yield frame
            if JobStatus(job.status).is_terminal:
                yield await self._end()
                return
            now_seen = (job.status, job.progress.step, job.progress.epoch)
            if now_seen != seen:
                if seen is not None and job.status != seen[0]:
                    yield await self._status(job)
                yield self._progress(job)
                seen, last_beat = now_seen, anyio.current_time()
            elif anyio.current_time() - last_beat >= HEARTBEAT_S:
                yield ": ping\n\n"
                last_beat = anyio.current_time()


TERMINAL = {s.value for s in JobStatus if s.is_terminal}


def redis_client_factory(url: str) -> Callable[[], object]:
    """One asyncio Redis client (a connection pool) per API process."""
    client = None

    def get():
        nonlocal client
        if client is None:
            import redis.asyncio as aioredis

            # Reads block for up to HEARTBEAT_S: the socket timeout must be longer.
            client = aioredis.Redis.from_url(url, socket_connect_timeout=5,
                                             socket_timeout=HEARTBEAT_S + 10,
                                             health_check_interval=30)
        return client

    return get
