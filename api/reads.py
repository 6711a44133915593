"""Request-path database reads: on the event loop where the database allows it.

`run_read(request, fn, *args)` calls `fn(session, *args)` with a Session and returns what it
returns. With PostgreSQL the API's lifespan makes an asyncio engine (core.db.make_read_engine)
and the same sync code runs on the event loop through AsyncSession.run_sync (SQLAlchemy's
greenlet bridge: the loop serves other requests while a query waits). Otherwise (SQLite, or
an app started without its lifespan) it runs in the threadpool, in a session of its own.
On 2 cores a thread hop per request cost more than the request's work: GIL and condition
hand-offs between the loop and the pool's threads were half the API process's CPU.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import DBAPIError

from core.config import get_settings
from core.db import make_read_engine, session_scope

T = TypeVar("T")


def _in_session(fn: Callable[..., T], *args) -> T:
    with session_scope() as session:
        return fn(session, *args)


async def run_read(request: Request, fn: Callable[..., T], *args) -> T:
    engine = getattr(request.app.state, "read_engine", None)
    if engine is None:
        return await run_in_threadpool(_in_session, fn, *args)
    try:
        return await _on_loop(engine, fn, *args)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    # The pooled connection was gone (the read engine does not ping before use): SQLAlchemy
    # has invalidated the pool's older connections; a read is safe to run again, once.
    return await _on_loop(engine, fn, *args)


async def _on_loop(engine, fn: Callable[..., T], *args) -> T:
    from sqlalchemy.ext.asyncio import AsyncSession

    async with AsyncSession(engine, expire_on_commit=False) as session:
        return await session.run_sync(fn, *args)


def open_read_engine(app: FastAPI) -> None:
    """At start: the event loop's engine, where the database has one."""
    app.state.read_engine = make_read_engine(get_settings())


async def close_read_engine(app: FastAPI) -> None:
    engine, app.state.read_engine = getattr(app.state, "read_engine", None), None
    if engine is not None:
        await engine.dispose()

