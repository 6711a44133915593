"""core/auth.py on a private SQLite database (the real migrations, no services): the key's
format, that only its sha256 is stored, the check of a presented key, revocation ending web
sessions, user names, and the first admin key. The race between API processes making the
first admin is in tests/integration/core/test_auth_db.py (Postgres)."""
from __future__ import annotations

import re
import stat
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from core import auth
from core.errors import Conflict, NotFound
from core.tables import ApiKey, Base, User, WebSession, utcnow

KEY_RE = re.compile(r"^thk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})\Z")


@pytest.fixture
def db(tmp_path):
    """A sessionmaker on a new SQLite file brought to the newest migration."""
    from alembic import command

    from core.db import _alembic_config

    engine = create_engine(f"sqlite:///{tmp_path / 'auth.db'}")

    @event.listens_for(engine, "connect")
    def _foreign_keys(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "head")
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def new_user_and_key(db, name: str = "alice", is_admin: bool = False) -> tuple[str, str]:
    with db.begin() as session:
        user = auth.create_user(session, name, is_admin)
        row, key = auth.create_key(session, user)
        return row.id, key


def every_stored_value(session: Session) -> list[str]:
    """Every non-null value of every column of every row, as text."""
    values = []
    for table in Base.metadata.sorted_tables:
        for row in session.execute(select(table)):
            values.extend(str(v) for v in row if v is not None)
    return values


def tenant(db, key: str):
    with db() as session:
        return auth.tenant_for_key(session, key)


def test_a_key_has_the_documented_format_and_its_id_is_the_rows(db):
    key_id, key = new_user_and_key(db)
    match = KEY_RE.match(key)
    assert match, key
    assert match.group(1) == key_id
    _other_id, other = new_user_and_key(db, "bob")
    assert KEY_RE.match(other) and other != key and other.split("_", 2)[2] != key.split("_", 2)[2]


def test_only_the_keys_sha256_is_stored_never_the_key(db):
    key_id, key = new_user_and_key(db)
    secret = KEY_RE.match(key).group(2)
    with db() as session:
        row = session.get(ApiKey, key_id)
        assert row.key_sha256 == auth.sha256_hex(key)
        values = every_stored_value(session)
    assert values, "the scan found no rows at all"
    assert not [v for v in values if key in v or secret in v]


def test_tenant_for_key_accepts_the_key_and_nothing_near_it(db):
    key_id, key = new_user_and_key(db)
    found = tenant(db, key)
    assert found is not None
    assert (found.name, found.is_admin, found.key_id) == ("alice", False, key_id)
    with db() as session:
        assert found.user_id == auth.user_by_name(session, "alice").id
    # Surrounding whitespace is the caller's to strip (the API does): the check is exact.
    assert tenant(db, key + "\n") is None

    # One character changed anywhere in the secret part: refused.
    last = key[-1]
    assert tenant(db, key[:-1] + ("A" if last != "A" else "B")) is None
    middle = len("thk_") + 17 + 20
    assert tenant(db, key[:middle] + ("x" if key[middle] != "x" else "y") + key[middle + 1:]) \
        is None
    # The right secret with another (unknown) id, and a well-formed key nobody made.
    other_id = "0" * 16 if key_id != "0" * 16 else "1" * 16
    assert tenant(db, f"thk_{other_id}_{key.split('_', 2)[2]}") is None
    assert tenant(db, "thk_0123456789abcdef_" + "A" * 43) is None


@pytest.mark.parametrize("malformed", [
    "", "thk_", "Bearer thk_0123456789abcdef_" + "A" * 43, "thk_0123456789ABCDEF_" + "A" * 43,
    "thk_0123456789abcde_" + "A" * 43, "thk_0123456789abcdef_" + "A" * 42,
    "thk_0123456789abcdef_" + "A" * 44, "thk_0123456789abcdef_" + "A" * 42 + "=",
    "xyz_0123456789abcdef_" + "A" * 43, "thk_0123456789abcdef" + "A" * 44,
    "thk_0123456789abcdef_" + "A" * 42 + "\x00", "thk_0123456789abcdef_" + "A" * 43 + "\n",
    "' OR 1=1 --",
])
def test_tenant_for_key_refuses_a_malformed_string(db, malformed):
    new_user_and_key(db)
    assert tenant(db, malformed) is None


def test_a_revoked_key_is_refused_by_id_or_by_the_whole_key(db):
    key_id, key = new_user_and_key(db)
    _bob_id, bob = new_user_and_key(db, "bob")
    with db.begin() as session:
        assert auth.revoke_key(session, key_id).revoked_at is not None
    assert tenant(db, key) is None
    assert tenant(db, bob) is not None  # another key is untouched
    with db.begin() as session:  # the whole key works as the argument too
        auth.revoke_key(session, bob)
    assert tenant(db, bob) is None
    with db() as session:
        keys = {k.id: k for k in auth.list_keys(session)}
        assert keys[key_id].revoked_at is not None
        with pytest.raises(NotFound):
            auth.revoke_key(session, "0123456789abcdef")


def test_revoking_a_key_ends_its_web_sessions_and_no_other(db):
    key_id, key = new_user_and_key(db)
    _other_id, other = new_user_and_key(db, "bob")
    with db.begin() as session:
        token, _ = auth.create_web_session(session, auth.tenant_for_key(session, key), 12)
        token2, _ = auth.create_web_session(session, auth.tenant_for_key(session, key), 12)
        other_token, _ = auth.create_web_session(session, auth.tenant_for_key(session, other), 12)
    with db() as session:
        assert auth.tenant_for_session(session, token).name == "alice"
        assert auth.tenant_for_session(session, token2).name == "alice"
        # Only the token's sha256 is stored, as for keys.
        assert not [v for v in every_stored_value(session) if token in v]
    with db.begin() as session:
        auth.revoke_key(session, key_id)
    with db() as session:
        assert auth.tenant_for_session(session, token) is None
        assert auth.tenant_for_session(session, token2) is None
        assert session.scalars(select(WebSession).where(WebSession.key_id == key_id)).all() == []
        assert auth.tenant_for_session(session, other_token).name == "bob"


def test_a_session_ends_when_it_expires_or_is_ended(db):
    _key_id, key = new_user_and_key(db)
    with db.begin() as session:
        tenant_ = auth.tenant_for_key(session, key)
        expiring, _ = auth.create_web_session(session, tenant_, 12)
        ended, _ = auth.create_web_session(session, tenant_, 12)
    with db.begin() as session:
        session.execute(update(WebSession)
                        .where(WebSession.token_sha256 == auth.sha256_hex(expiring))
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
        auth.end_web_session(session, ended)
    with db() as session:
        assert auth.tenant_for_session(session, expiring) is None
        assert auth.tenant_for_session(session, ended) is None
        assert auth.tenant_for_session(session, "") is None
        assert auth.tenant_for_session(session, "x" * 129) is None


@pytest.mark.parametrize("name", ["", " alice", "-alice", ".x", "a b", "a/b", "a" * 65,
                                  "ålice", "a\x00", "a;drop", "alice\n", "\nalice"])
def test_create_user_rejects_a_bad_name(db, name):
    with db() as session, pytest.raises(ValueError, match="user name"):
        auth.create_user(session, name)


def test_create_user_accepts_names_of_the_allowed_form(db):
    with db.begin() as session:
        for name in ("a", "A9", "alice.b_c-d@example.org", "x" * 64):
            auth.create_user(session, name)
    with db() as session:
        assert session.scalar(select(User).where(User.name == "x" * 64)) is not None


def test_create_user_rejects_a_duplicate_name_with_conflict(db):
    new_user_and_key(db)
    with db() as session:
        with pytest.raises(Conflict, match="alice"):
            auth.create_user(session, "alice", is_admin=True)
        # The session is usable after the refusal.
        assert auth.user_by_name(session, "alice").is_admin is False
    with db() as session:
        assert len(session.scalars(select(User)).all()) == 1


def test_user_by_name_raises_not_found(db):
    with db() as session, pytest.raises(NotFound):
        auth.user_by_name(session, "nobody")


def test_ensure_admin_key_makes_admin_once_with_a_private_working_key_file(db, tmp_path):
    key_file = tmp_path / "data" / "admin.key"  # its folder does not exist yet
    with db() as session:
        assert auth.has_admin(session) is False
        assert auth.ensure_admin_key(session, key_file) is True
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    text = key_file.read_text()
    key = text.strip()
    assert text == key + "\n" and KEY_RE.match(key)
    found = tenant(db, key)
    assert found is not None and found.name == "admin" and found.is_admin
    with db() as session:
        assert not [v for v in every_stored_value(session) if key in v]
        # A second call (the next start) does nothing: no user, no key, the file unchanged.
        assert auth.ensure_admin_key(session, key_file) is False
        assert len(session.scalars(select(User)).all()) == 1
        assert len(session.scalars(select(ApiKey)).all()) == 1
    assert key_file.read_text() == text


def test_ensure_admin_key_tightens_an_existing_files_mode(db, tmp_path):
    key_file = tmp_path / "admin.key"
    key_file.write_text("stale\n")
    key_file.chmod(0o644)
    with db() as session:
        assert auth.ensure_admin_key(session, key_file) is True
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert tenant(db, key_file.read_text().strip()).is_admin


def test_ensure_admin_key_does_nothing_when_another_admin_exists(db, tmp_path):
    new_user_and_key(db, "root", is_admin=True)
    key_file = tmp_path / "admin.key"
    with db() as session:
        assert auth.ensure_admin_key(session, key_file) is False
    assert not key_file.exists()


def test_ensure_admin_key_refuses_a_non_admin_user_named_admin(db, tmp_path):
    new_user_and_key(db, "admin", is_admin=False)
    key_file = tmp_path / "admin.key"
    with db() as session, pytest.raises(Conflict, match="--admin"):
        auth.ensure_admin_key(session, key_file)
    assert not key_file.exists()

