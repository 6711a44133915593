"""Resource ids: 32 lowercase hex digits (a UUID4 without dashes), for jobs and uploads."""
from __future__ import annotations

import re
import uuid

# For pydantic's `pattern` (its regex's $ is the true end of the string).
ID_REGEX = r"^[0-9a-f]{32}$"
_ID = re.compile(r"[0-9a-f]{32}")


def new_id() -> str:
    return uuid.uuid4().hex


def is_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None
