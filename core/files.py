"""Writing a local file atomically: readers see the old file or the whole new one."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

T = TypeVar("T")


def atomic_write(path: Path, write: Callable[[BinaryIO], T]) -> T:
    """Call write(file) on a temporary file beside path, fsync it, then rename it over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per call, not per pid: containers sharing a volume run processes with the same
    # pid (two compose worker replicas both decoding the tensor cache: one renamed the other's
    # half-written file away and failed its job).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as raw:
            result = write(raw)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return result
