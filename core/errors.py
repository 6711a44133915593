"""Domain errors shared by the API and the worker; api/errors.py maps each to an HTTP status."""
from __future__ import annotations


class NotFound(Exception):
    """The named resource does not exist (or is not visible)."""


class Conflict(Exception):
    """The resource exists but is in a state that does not allow the request."""


class TooLarge(Exception):
    """A body, file or image is over a configured limit."""


# pydantic's words before what a validator raised (a ValueError, an assert): the reason is the
# rest.
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def validator_reason(msg: str) -> str:
    """A pydantic error's `msg` as a person reads it: without pydantic's words in front of
    what a validator raised (a 422's msg, and a sweep's message quoting a trial's)."""
    for prefix in _PYDANTIC_PREFIXES:
        msg = msg.removeprefix(prefix)
    return msg


class FieldError(Exception):
    """A request field names something that cannot be used; `field` is its dotted path."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


class Unauthorized(Exception):
    """No credentials, or ones that are malformed, unknown, revoked or expired."""


class Forbidden(Exception):
    """Known credentials that do not allow this request (an admin-only route)."""
