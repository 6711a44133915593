"""api.paging's cursor and api.schemas.Page, the envelope of every new list route."""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from api.paging import decode_cursor, encode_cursor
from api.schemas import Page


def test_a_cursor_names_the_row_it_was_made_from():
    when = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=timezone.utc)
    row = SimpleNamespace(created_at=when, id="ab" * 16)
    assert decode_cursor(encode_cursor(row)) == (when, "ab" * 16)


@pytest.mark.parametrize("cursor", ["%%%", "bm90IGEgY3Vyc29y", encode_cursor(SimpleNamespace(
    created_at=datetime(2026, 1, 1), id="x\x00"))])
def test_a_cursor_this_api_did_not_return_is_a_422_naming_it(cursor):
    with pytest.raises(RequestValidationError) as exc:
        decode_cursor(cursor)
    assert [e["loc"] for e in exc.value.errors()] == [("query", "cursor")]


def test_the_page_envelope_has_items_and_next_cursor():
    class Thing(BaseModel):
        id: str

    page = Page[Thing](items=[Thing(id="a")], next_cursor=None)
    assert page.model_dump() == {"items": [{"id": "a"}], "next_cursor": None}
    assert set(Page[Thing].model_json_schema()["properties"]) == {"items", "next_cursor"}
