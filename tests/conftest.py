"""Test setup: a private Postgres database and Redis databases on the local servers.

The environment is set before any trainhub module is imported, so code that runs in the
test process (core.db, core.jobs, ...) talks to the same real Postgres as the processes
the tests start.
"""
from __future__ import annotations

import os
import tempfile
import uuid

PG_ADMIN_URL = os.environ.get("TRAINHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("TRAINHUB_TEST_REDIS", "redis://127.0.0.1:6379")
# Redis databases for the broker and live events. Nothing is flushed: stream keys carry
# job ids and each test stack consumes its own queue, so concurrent runs don't collide.
BROKER_DB, EVENTS_DB = 13, 14

_RUN_ID = uuid.uuid4().hex[:8]
_created_databases: list[str] = []


def pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


def create_database(prefix: str = "trainhub_test", name: str | None = None) -> str:
    """A new empty Postgres database; dropped when the session ends. Returns its URL."""
    import psycopg

    name = name or f"{prefix}_{_RUN_ID}_{len(_created_databases)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _created_databases.append(name)
    return pg_url(name)


MAIN_DATABASE = f"trainhub_test_{_RUN_ID}_main"


def pytest_configure(config):
    data_dir = tempfile.mkdtemp(prefix="trainhub-test-")
    os.environ["TRAINHUB_DATA_DIR"] = data_dir
    # Named now, created only if a collected test needs Postgres (unit tests do not).
    os.environ["TRAINHUB_DATABASE_URL"] = pg_url(MAIN_DATABASE)
    os.environ["TRAINHUB_BROKER_URL"] = f"{REDIS_BASE}/{BROKER_DB}"
    os.environ["TRAINHUB_REDIS_URL"] = f"{REDIS_BASE}/{EVENTS_DB}"
    os.environ["TRAINHUB_ALLOW_DOWNLOAD"] = "false"
    # Most tests are about training, not tenants: they run with authentication off (every
    # caller an admin, on 127.0.0.1). Tests of keys, isolation, limits and the web page's
    # login start their own API with TRAINHUB_AUTH=on (tests/tenants.py).
    os.environ["TRAINHUB_AUTH"] = "off"


def pytest_collection_finish(session):
    unit = os.path.join("tests", "unit") + os.sep
    if any(unit not in str(item.path) for item in session.items):
        create_database(name=MAIN_DATABASE)


def pytest_unconfigure(config):
    import psycopg

    try:
        from core.db import reset_engine

        reset_engine()
    except Exception:
        pass
    if not _created_databases:
        return
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for name in _created_databases:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
