"""Client text: what the database can store, and how much of it a message echoes back.

Every string a client sends that trainhub stores (a job's name, an upload's name and file
name, an Idempotency-Key) goes through `storable`, so a value PostgreSQL cannot keep is a
422 naming the field rather than a database error. PostgreSQL's text cannot hold NUL
(U+0000), and a lone surrogate (U+D800–U+DFFF, which JSON's \\ud800 escapes can produce)
has no UTF-8 encoding at all."""
from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from core.errors import FieldError

# How much of a client's value a message quotes (ids are 32 characters).
ECHO_LIMIT = 64


def storable_problem(value: str) -> str | None:
    """Why the database cannot store value, or None when it can."""
    if "\x00" in value:
        return "must not contain a NUL character (U+0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate, U+D800–U+DFFF)"
    return None


def storable(field: str, value: str | None) -> str | None:
    """value unchanged when the database can store it; FieldError (422) naming field if not."""
    if value is not None:
        problem = storable_problem(value)
        if problem:
            raise FieldError(field, f"{field} {problem}")
    return value


def _storable_for_pydantic(value: str) -> str:
    problem = storable_problem(value)
    if problem:
        raise PydanticCustomError("string_not_storable", problem)
    return value


# A str field of a pydantic model that the database must store.
StorableStr = Annotated[str, AfterValidator(_storable_for_pydantic)]


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """repr() of a client's value for a message: at most `limit` characters of it (with an
    ellipsis when cut), every unprintable character (NUL, lone surrogates) escaped."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return f"{text[:limit]!r}…"
    return repr(text)


def safe(text: str) -> str:
    """text that encodes as UTF-8: lone surrogates become \\udXXX escapes (for a response
    body, which could not be written otherwise)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
