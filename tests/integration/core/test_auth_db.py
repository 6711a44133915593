"""core/auth.py on the real Postgres: API processes starting at the same moment on an empty
database make exactly one first admin (the unique user name decides), and no column of any
row holds a key."""
from __future__ import annotations

import re
import stat
import threading

import pytest
from sqlalchemy import create_engine, delete, select
from sqlalchemy.orm import sessionmaker

from core import auth
from core.tables import ApiKey, Base, User, WebSession
from tests.conftest import create_database

ROUNDS = 4
THREADS = 2


@pytest.fixture(scope="module")
def db():
    """A sessionmaker on a database of its own (the first admin needs one with no admin)."""
    from alembic import command

    from core.db import _alembic_config

    url = create_database("trainhub_authdb").replace("postgresql://", "postgresql+psycopg://")
    engine = create_engine(url, pool_size=THREADS + 1)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "head")
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def clear(db) -> None:
    with db.begin() as session:
        session.execute(delete(WebSession))
        session.execute(delete(ApiKey))
        session.execute(delete(User))


def race(db, key_files) -> list[bool | BaseException]:
    """ensure_admin_key in THREADS threads released at once, each with its own session."""
    barrier = threading.Barrier(len(key_files))
    results: list[bool | BaseException] = [False] * len(key_files)

    def run(i: int) -> None:
        session = db()
        try:
            barrier.wait(timeout=30)
            results[i] = auth.ensure_admin_key(session, key_files[i])
        except BaseException as exc:  # reported by the test, not lost in the thread
            results[i] = exc
        finally:
            session.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(key_files))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def both_see_no_admin(monkeypatch, parties: int) -> list[str]:
    """Hold each thread after its first has_admin() until every thread has asked, so all of
    them go on to create the user (the window two processes starting at once share).
    Returns the log of create_user outcomes."""
    barrier = threading.Barrier(parties)
    asked = threading.local()
    outcomes: list[str] = []
    real_has_admin, real_create_user = auth.has_admin, auth.create_user

    def has_admin(session):
        answer = real_has_admin(session)
        if not getattr(asked, "done", False):
            asked.done = True
            barrier.wait(timeout=30)
        return answer

    def create_user(*args, **kwargs):
        try:
            user = real_create_user(*args, **kwargs)
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append("created")
        return user

    monkeypatch.setattr(auth, "has_admin", has_admin)
    monkeypatch.setattr(auth, "create_user", create_user)
    return outcomes


@pytest.mark.parametrize("forced", [True] + [False] * (ROUNDS - 1))
def test_two_processes_starting_at_once_make_exactly_one_admin(db, tmp_path, monkeypatch,
                                                               forced):
    clear(db)
    outcomes = both_see_no_admin(monkeypatch, THREADS) if forced else None
    key_files = [tmp_path / f"proc{i}" / "admin.key" for i in range(THREADS)]
    results = race(db, key_files)
    assert not [r for r in results if isinstance(r, BaseException)], results
    if forced:  # both tried to create it: the unique name let one through
        assert sorted(outcomes) == ["Conflict"] * (THREADS - 1) + ["created"], outcomes
        monkeypatch.undo()
    assert sorted(results) == [False] * (THREADS - 1) + [True], results
    winner = key_files[results.index(True)]
    assert [f for f in key_files if f.exists()] == [winner]
    assert stat.S_IMODE(winner.stat().st_mode) == 0o600
    key = winner.read_text().strip()
    with db() as session:
        users = session.scalars(select(User)).all()
        assert [(u.name, u.is_admin) for u in users] == [("admin", True)]
        assert len(session.scalars(select(ApiKey)).all()) == 1
        found = auth.tenant_for_key(session, key)
        assert found is not None and found.name == "admin" and found.is_admin
        # And the next start finds it made.
        assert auth.ensure_admin_key(session, tmp_path / "later.key") is False
    assert not (tmp_path / "later.key").exists()


def test_no_column_of_any_row_holds_a_key_or_a_session_token(db):
    clear(db)
    keys = []
    with db.begin() as session:
        for name in ("alice", "bob"):
            user = auth.create_user(session, name)
            keys.append(auth.create_key(session, user)[1])
        token, _ = auth.create_web_session(session, auth.tenant_for_key(session, keys[0]), 1)
    secrets_ = keys + [token] + [re.match(r"thk_[0-9a-f]{16}_(.+)$", k).group(1) for k in keys]
    with db() as session:
        values = [str(v) for table in Base.metadata.sorted_tables
                  for row in session.execute(select(table)) for v in row if v is not None]
        assert {auth.sha256_hex(k) for k in keys} <= set(values)
    assert not [v for v in values for s in secrets_ if s in v]
