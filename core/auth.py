"""Users and API keys: create, revoke, list, and the check of a presented key.

A key is `thk_<id>_<secret>`: the id finds the row, and only sha256 of the whole key is
stored (a key holds 256 random bits, so a fast hash is enough; no salt or KDF is needed),
compared in constant time. A key is shown once, at creation.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import Conflict, NotFound
from core.ids import new_id
from core.tables import ApiKey, User, WebSession, utcnow
from core.tenancy import Tenant

KEY_PREFIX = "thk_"
_KEY_RE = re.compile(r"thk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
USER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
ADMIN_NAME = "admin"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _new_key() -> tuple[str, str]:
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def create_user(session: Session, name: str, is_admin: bool = False) -> User:
    if not USER_NAME_RE.fullmatch(name):
        raise ValueError(f"user name {name[:64]!r}: 1-64 letters, digits and . _ @ -, "
                         "starting with a letter or digit")
    user = User(id=new_id(), name=name, is_admin=is_admin)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"user {name!r} already exists") from None
    return user


def user_by_name(session: Session, name: str) -> User:
    user = session.scalars(select(User).where(User.name == name)).first()
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


def create_key(session: Session, user: User) -> tuple[ApiKey, str]:
    """The new key's row and the key itself (to show once; it is not stored)."""
    key_id, key = _new_key()
    row = ApiKey(id=key_id, user_id=user.id, key_sha256=sha256_hex(key))
    session.add(row)
    session.flush()
    return row, key


def revoke_key(session: Session, key_id: str) -> ApiKey:
    """Revoke by the key's id (or the whole key); its web sessions end with it."""
    match = _KEY_RE.fullmatch(key_id)
    row = session.get(ApiKey, match.group(1) if match else key_id)
    if row is None:
        raise NotFound(f"no API key {key_id[:20]!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.query(WebSession).filter(WebSession.key_id == row.id).delete()
    session.flush()
    return row


@dataclass(frozen=True)
class KeyInfo:
    id: str
    user: str
    is_admin: bool
    created_at: datetime
    revoked_at: datetime | None


def list_keys(session: Session, user_name: str | None = None) -> list[KeyInfo]:
    query = select(ApiKey, User).join(User, ApiKey.user_id == User.id)
    if user_name is not None:
        query = query.where(User.name == user_name)
    rows = session.execute(query.order_by(User.name, ApiKey.created_at)).all()
    return [KeyInfo(k.id, u.name, u.is_admin, k.created_at, k.revoked_at) for k, u in rows]


def _tenant(user: User, key: ApiKey) -> Tenant:
    return Tenant(user_id=user.id, name=user.name, is_admin=user.is_admin, key_id=key.id)


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    """The tenant a presented key belongs to; None for a malformed, unknown or revoked key."""
    match = _KEY_RE.fullmatch(key)
    if match is None:
        return None
    found = session.execute(select(ApiKey, User).join(User, ApiKey.user_id == User.id)
                            .where(ApiKey.id == match.group(1))).first()
    # Compared even when the id is unknown, so the answer takes as long either way.
    stored = found[0].key_sha256 if found else "0" * 64
    if not hmac.compare_digest(stored, sha256_hex(key)) or found is None:
        return None
    api_key, user = found
    return None if api_key.revoked_at is not None else _tenant(user, api_key)


def create_web_session(session: Session, tenant: Tenant, hours: float) -> tuple[str, datetime]:
    """A new web page session for the key the tenant logged in with: (token, expires_at)."""
    token = secrets.token_urlsafe(32)
    row = WebSession(token_sha256=sha256_hex(token), key_id=tenant.key_id,
                     expires_at=utcnow() + timedelta(hours=hours))
    session.add(row)
    session.flush()
    return token, row.expires_at


def tenant_for_session(session: Session, token: str) -> Tenant | None:
    if not token or len(token) > 128:
        return None
    found = session.execute(
        select(ApiKey, User).join(WebSession, WebSession.key_id == ApiKey.id)
        .join(User, ApiKey.user_id == User.id)
        .where(WebSession.token_sha256 == sha256_hex(token),
               WebSession.expires_at > utcnow(), ApiKey.revoked_at.is_(None))).first()
    return _tenant(found[1], found[0]) if found else None


def end_web_session(session: Session, token: str) -> None:
    session.query(WebSession).filter(WebSession.token_sha256 == sha256_hex(token)).delete()
    session.flush()


def has_admin(session: Session) -> bool:
    return session.scalars(select(User.id).where(User.is_admin.is_(True)).limit(1)).first() \
        is not None


def ensure_admin_key(session: Session, key_file: Path) -> bool:
    """With no admin user yet: create `admin` and a key, written to key_file (mode 600).
    Returns whether it did. Several API processes may start at once: the user name is
    unique, so only one creates it; the others find it made."""
    if has_admin(session):
        return False
    try:
        user = create_user(session, ADMIN_NAME, is_admin=True)
    except Conflict:  # a user named admin exists without the flag, or a racing process
        session.rollback()
        if has_admin(session):
            return False
        raise Conflict(f"a user named {ADMIN_NAME!r} exists but is not an admin; create "
                       "an admin with `trainhub admin create-user NAME --admin`") from None
    _row, key = create_key(session, user)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(key_file, 0o600)  # an existing file keeps its mode through O_CREAT
    session.commit()
    return True
