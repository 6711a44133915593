"""Who is asking, and the one place an owned row is loaded or listed for them.

Jobs, datasets, programs and sweeps carry their owner's user id. A tenant sees only its own rows;
an admin sees everyone's. Another tenant's row is answered exactly as a missing one
(NotFound, or the caller's own FieldError), so an id's existence never leaks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from core.errors import NotFound
from core.ids import is_id
from core.tables import Dataset, Job, Program, Sweep, User

Owned = TypeVar("Owned", Job, Dataset, Program, Sweep)
# What a NotFound calls each kind of row (a program is one of GET /models' models).
NOUNS = {Job: "job", Dataset: "dataset", Program: "model", Sweep: "sweep"}


@dataclass(frozen=True)
class Tenant:
    user_id: str | None  # None: authentication is off
    name: str
    is_admin: bool
    key_id: str | None = None  # the API key the request came with (rate limits count it)


# With authentication off every caller is this one: it sees everything and owns new rows
# as nobody (owner NULL).
LOCAL_ADMIN = Tenant(user_id=None, name="local", is_admin=True)


def can_see(tenant: Tenant, row: Job | Dataset | Program | Sweep) -> bool:
    return tenant.is_admin or (row.owner is not None and row.owner == tenant.user_id)


def get_owned(session: Session, model: type[Owned], row_id: str, tenant: Tenant,
              missing: Exception | None = None) -> Owned:
    """The row with this id if the tenant may see it; else `missing` is raised (NotFound
    naming the id by default), the same for a malformed, absent or foreign id."""
    row = session.get(model, row_id) if is_id(row_id) else None
    if row is None or not can_see(tenant, row):
        raise missing or NotFound(f"{NOUNS[model]} {row_id[:64]!r} not found")
    return row


def visible(query: Select, model: type[Owned], tenant: Tenant) -> Select:
    """The query narrowed to the rows the tenant may see."""
    return query if tenant.is_admin else query.where(model.owner == tenant.user_id)


def tenant_of(session: Session, owner: str | None) -> Tenant:
    """The tenant a row's owner is (for the worker, which has no request): nobody's row
    (made with authentication off) acts as the local admin; a user gone since, as nobody."""
    if owner is None:
        return LOCAL_ADMIN
    user = session.get(User, owner)
    if user is None:
        return Tenant(user_id=owner, name="(deleted)", is_admin=False)
    return Tenant(user_id=user.id, name=user.name, is_admin=user.is_admin)
