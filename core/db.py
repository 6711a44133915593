"""Engine, sessions, and bringing the schema up to date under a lock."""
from __future__ import annotations

import fcntl
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

# Arbitrary constant shared by every trainhub process: the Postgres advisory lock key.
MIGRATION_LOCK_KEY = 0x7472_6E68  # "trnh"
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"

_engine: Engine | None = None
_engine_pid: int | None = None
_sessionmaker: sessionmaker | None = None


def make_engine(settings: Settings) -> Engine:
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Kept connections as for Postgres below: with SQLAlchemy's default 5, 16 /predict
        # clients at once made the API open a connection (and run the three PRAGMAs) for
        # most requests and close it after; py-spy put that at 6% of the API's time.
        engine = create_engine(url, pool_size=20, max_overflow=20,
                               connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # WAL lets the API read while the worker writes; foreign keys for cascades.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # pool_size is how many connections are kept between bursts (made only when needed):
    # 5 made a busy API open and close a Postgres connection (a server process) for most
    # requests beyond the fifth at once; 15 + 15 covers the API's threadpool (40 threads).
    return create_engine(url, pool_pre_ping=True, pool_size=15, max_overflow=15,
                         connect_args={"connect_timeout": 5})


def make_read_engine(settings: Settings) -> AsyncEngine | None:
    """The API's engine for reads on its event loop (psycopg's asyncio connections), or None
    where there is none to make: SQLite (embedded mode) reads in threads. A thread hop per
    query cost a busy 2-core API more in GIL and futex hand-offs than the queries took."""
    url = settings.resolved_database_url
    if not url.startswith("postgresql"):
        return None
    from sqlalchemy.ext.asyncio import create_async_engine

    # Autocommit and no ping before each use: a read is a query or two that needs no
    # transaction, and BEGIN, the ping and ROLLBACK were three of its four round trips.
    # A connection lost meanwhile (a database restart) fails its read, which api.reads
    # retries once on a fresh one. 20 kept: 16 requests at once made it open and close an
    # overflow connection (a server process) per request with 10.
    return create_async_engine(url, isolation_level="AUTOCOMMIT", pool_size=20,
                               max_overflow=10, connect_args={"connect_timeout": 5})


def get_engine() -> Engine:
    """The process's engine; a forked child gets a fresh one (connections don't survive fork)."""
    global _engine, _engine_pid, _sessionmaker
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = make_engine(get_settings())
        _engine_pid = os.getpid()
        _sessionmaker = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def reset_engine() -> None:
    global _engine, _sessionmaker
    if _engine is not None:
        # In a forked child the pooled connections are the parent's: closing them here would
        # end the parent's sessions too (the server sees a Terminate on their sockets; seen
        # as the worker's heartbeat failing with "server closed the connection" just as its
        # pool forked). Only drop them.
        _engine.dispose(close=_engine_pid == os.getpid())
    _engine = _sessionmaker = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    get_engine()
    assert _sessionmaker is not None
    session = _sessionmaker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_outage(exc: BaseException) -> bool:
    """A lost or refused connection, as opposed to a statement the database rejected."""
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or type(exc.orig).__name__ in ("OperationalError",
                                                                  "InterfaceError"))


def new_session() -> Session:
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker()


def _alembic_config(connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(conn) -> None:
    """Alembic's upgrade to head on conn, said in one line when it changed anything.

    Alembic's own INFO lines (the plugins it set up, the DDL mode it assumes, each
    migration) were 14 and more at every start of the API and the worker, the same each
    time; its warnings still show."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # before its import logs
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    before = MigrationContext.configure(conn).get_current_revision()
    command.upgrade(_alembic_config(conn), "head")
    after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        log.info("database schema upgraded from %s to %s",
                 before or "an empty database", after)


def upgrade_schema() -> None:
    """Bring the database to the newest migration; safe to call from many processes at once."""
    engine = get_engine()
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # Transaction-scoped: released on commit, or when the connection dies.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            _upgrade(conn)
        return
    lock_path = get_settings().data_dir / "migrate.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            with engine.begin() as conn:
                _upgrade(conn)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
