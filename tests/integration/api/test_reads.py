"""api.reads: request-path reads on the event loop with PostgreSQL (the test database), in
a thread otherwise; the same sync code either way, its errors unchanged."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api import reads
from api.main import app
from core.db import session_scope
from core.errors import NotFound


def where_it_ran(session) -> tuple[str, int]:
    return threading.current_thread().name, session.execute(text("SELECT 41 + 1")).scalar()


def missing(session) -> None:
    raise NotFound("job 'nope' not found")


def request_for(engine) -> SimpleNamespace:
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(read_engine=engine)))


def test_the_lifespan_makes_the_read_engine_and_disposes_it():
    with TestClient(app) as client:
        assert isinstance(app.state.read_engine, AsyncEngine)
        assert client.get("/health").status_code == 200
    assert app.state.read_engine is None


def test_with_an_engine_the_read_runs_on_the_event_loop_thread():
    async def main():
        own = FastAPI()
        reads.open_read_engine(own)
        try:
            loop_thread = threading.current_thread().name
            ran_on, value = await reads.run_read(request_for(own.state.read_engine),
                                                 where_it_ran)
            assert (ran_on, value) == (loop_thread, 42)
            with pytest.raises(NotFound):
                await reads.run_read(request_for(own.state.read_engine), missing)
        finally:
            await reads.close_read_engine(own)

    anyio.run(main)


def backend_pid(session) -> int:
    return session.execute(text("SELECT pg_backend_pid()")).scalar()


def test_a_read_on_a_connection_the_server_closed_is_run_again_on_a_fresh_one():
    """The read engine does not ping before use: a pooled connection that a database restart
    (here: pg_terminate_backend) ended fails its read, which is retried once."""
    async def main():
        own = FastAPI()
        reads.open_read_engine(own)
        request = request_for(own.state.read_engine)
        try:
            first = await reads.run_read(request, backend_pid)
            with session_scope() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            second = await reads.run_read(request, backend_pid)
            assert second != first
            with pytest.raises(NotFound):  # errors that are not a lost connection: as raised
                await reads.run_read(request, missing)
        finally:
            await reads.close_read_engine(own)

    anyio.run(main)


def test_reads_run_outside_a_transaction():
    async def main():
        own = FastAPI()
        reads.open_read_engine(own)
        try:
            in_transaction = await reads.run_read(
                request_for(own.state.read_engine),
                lambda s: s.execute(text("SELECT now() = statement_timestamp()")).scalar())
            assert in_transaction is True  # autocommit: each statement is its own
        finally:
            await reads.close_read_engine(own)

    anyio.run(main)


def test_without_an_engine_the_read_runs_in_a_worker_thread():
    async def main():
        ran_on, value = await reads.run_read(request_for(None), where_it_ran)
        assert value == 42 and ran_on != threading.current_thread().name
        with pytest.raises(NotFound):
            await reads.run_read(request_for(None), missing)

    anyio.run(main)


def test_sqlite_has_no_read_engine(monkeypatch, tmp_path):
    from core.config import get_settings

    monkeypatch.setenv("TRAINHUB_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    get_settings.cache_clear()
    try:
        own = FastAPI()
        reads.open_read_engine(own)
        assert own.state.read_engine is None
    finally:
        get_settings.cache_clear()
