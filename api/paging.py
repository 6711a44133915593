"""Keyset paging for list routes, newest first: an opaque `cursor` names the last row of a
page (its created_at and id), and the next page starts after it. A list route answers in
api.schemas.Page (`items`, `next_cursor`); GET /jobs, older, names its items `jobs`."""
from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone
from typing import Any

from fastapi.exceptions import RequestValidationError
from sqlalchemy import Select, tuple_
from sqlalchemy.orm import Session

from core.ids import is_id


def encode_cursor(row: Any) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of the row a cursor names; a 422 naming `cursor` for anything this
    API did not return."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, row_id = raw.split("|", 1)
        if not is_id(row_id):  # nothing but an id goes into the query (no NUL, no junk)
            raise ValueError(row_id)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.astimezone(timezone.utc), row_id
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise RequestValidationError([{"loc": ("query", "cursor"), "type": "value_error",
                                       "msg": "cursor is not one this API returned"}]) from None


def newest_first(session: Session, query: Select, table: Any, cursor: str | None,
                 limit: int) -> tuple[list, str | None]:
    """One page of query's rows of table, newest first, after cursor; and the cursor of the
    next page (None on the last)."""
    if cursor:
        # A row comparison: the (created_at, id) index starts the page at the cursor. The
        # same test written with OR was a filter, read from the newest row down to it.
        query = query.where(tuple_(table.created_at, table.id) < decode_cursor(cursor))
    rows = session.scalars(query.order_by(table.created_at.desc(), table.id.desc())
                           .limit(limit + 1)).all()
    page = list(rows[:limit])
    return page, encode_cursor(page[-1]) if len(rows) > limit else None
