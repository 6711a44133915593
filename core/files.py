"""Writing a local file atomically: readers see the old file or the whole new one. A full
device is reported as NoSpaceLeft, naming the file; unwritable() says why a folder takes no
file."""
from __future__ import annotations

import errno
import os
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, TypeVar

T = TypeVar("T")


class NoSpaceLeft(OSError):
    """A write found its device full. The plain OSError names no file, and torch.save turns
    it into `RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos ...`
    with the OSError only in the chain; this says which path could not be written."""

    def __init__(self, path: Path | str):
        super().__init__(errno.ENOSPC, "no space left on device", str(path))

    def __str__(self) -> str:
        return f"no space left on device: {self.filename}"


def is_disk_full(exc: BaseException) -> bool:
    """An ENOSPC OSError is exc or anywhere in its chain (__cause__, __context__)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        stack += [current.__cause__, current.__context__]
    return False


@contextmanager
def naming_a_full_disk(path: Path | str) -> Iterator[None]:
    """Within the block, a failure caused by a full device becomes NoSpaceLeft(path)."""
    try:
        yield
    except NoSpaceLeft:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise NoSpaceLeft(path) from exc
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], T]) -> T:
    """Call write(file) on a temporary file beside path, fsync it, then rename it over path."""
    with naming_a_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unique per call, not per pid: containers sharing a volume run processes with the
        # same pid (two compose worker replicas both decoding the tensor cache: one renamed
        # the other's half-written file away and failed its job).
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


def unwritable(folder: Path) -> str | None:
    """Why no file can be made in folder (made first when missing), or None: a real file is
    made and removed, since permission bits say nothing of a read-only mount, or of root."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return f"cannot write to {folder} ({exc.strerror or exc})"
    return None
