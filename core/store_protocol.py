"""What every artifact store is: the interface (a local folder in core/artifacts.py, an S3
bucket in core/s3store.py), its errors, key validation and the hashing and capped copies both
stores use. Both import this; neither imports the other."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager, Iterator, Protocol

from core.errors import TooLarge

_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class ArtifactStore(Protocol):
    def save(self, key: str, write: Callable[[BinaryIO], None]) -> tuple[int, str]:
        """Write an artifact atomically; returns (size in bytes, sha256 hex)."""

    def open(self, key: str) -> BinaryIO: ...

    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> None: ...

    def save_stream(self, key: str, source: BinaryIO, max_bytes: int) -> int:
        """Copy a stream in; TooLarge (and nothing stored) past max_bytes. Returns the size."""

    def local_file(self, key: str) -> ContextManager[Path]:
        """A local path holding the artifact for as long as the context lasts."""


class ArtifactStoreError(OSError):
    """The store could not be read or written (an S3 error, an unreachable endpoint); an
    OSError, as a local disk's failures are, so callers handle both alike."""


class StoreConfigError(ValueError):
    """TRAINHUB_ARTIFACT_URL (or the store it names), or the data folder, cannot be used; the
    message is one line that names the setting."""


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid artifact key {key!r}")
    return key


class HashingWriter:
    """File wrapper that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.size += view.nbytes
        return self.raw.write(view)

    def flush(self) -> None:
        self.raw.flush()


def copy_capped(source: BinaryIO, out, max_bytes: int) -> None:
    """Copy source to out in 1 MiB pieces; TooLarge once more than max_bytes went through."""
    copied = 0
    while chunk := source.read(1 << 20):
        copied += len(chunk)
        if copied > max_bytes:
            raise TooLarge(f"more than {max_bytes} bytes")
        out.write(chunk)
