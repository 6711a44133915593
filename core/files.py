"""Writing a local file atomically: readers see the old file or the whole new one."""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

T = TypeVar("T")


def atomic_write(path: Path, write: Callable[[BinaryIO], T]) -> T:
    """Call write(file) on a temporary file beside path, fsync it, then rename it over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            result = write(raw)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return result
