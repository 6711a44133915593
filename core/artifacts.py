"""Artifact storage behind a small interface: a local folder now, an S3-compatible store later.

Keys are relative, slash-separated names that trainhub builds from ids
(`jobs/<job id>/checkpoints/epoch-0003.pt`); nothing a client sends becomes a key.
"""
from __future__ import annotations

import hashlib
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager, Iterator, Protocol

from core.errors import TooLarge
from core.files import atomic_write

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


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid artifact key {key!r}")
    return key


class _HashingWriter:
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


class LocalArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise ValueError(f"invalid artifact key {key!r}")
        return path

    def save(self, key: str, write: Callable[[BinaryIO], None]) -> tuple[int, str]:
        def hashed(raw: BinaryIO) -> _HashingWriter:
            writer = _HashingWriter(raw)
            write(writer)  # type: ignore[arg-type]
            return writer

        writer = atomic_write(self.path(key), hashed)
        return writer.size, writer.sha.hexdigest()

    def save_stream(self, key: str, source: BinaryIO, max_bytes: int) -> int:
        def copy(out) -> None:
            copied = 0
            while chunk := source.read(1 << 20):
                copied += len(chunk)
                if copied > max_bytes:
                    raise TooLarge(f"more than {max_bytes} bytes")
                out.write(chunk)

        size, _ = self.save(key, copy)
        return size

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(f"artifact {key} is missing")
        yield path

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with self.open(key) as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        target = self.path(prefix.rstrip("/"))
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def get_store() -> ArtifactStore:
    from core.config import get_settings

    return LocalArtifactStore(get_settings().artifacts_dir)


def checkpoint_key(job_id: str, epoch: int) -> str:
    return f"jobs/{job_id}/checkpoints/epoch-{epoch:04d}.pt"


def resume_key(job_id: str) -> str:
    """The job's mid-epoch resume checkpoint (one per job, overwritten)."""
    return f"jobs/{job_id}/checkpoints/resume.pt"


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}"


def dataset_prefix(dataset_id: str) -> str:
    return f"datasets/{dataset_id}"


def dataset_upload_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}/upload"


def dataset_tensors_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}/tensors.pt"
