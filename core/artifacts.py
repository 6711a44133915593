"""Artifact storage behind a small interface: a local folder (the default) or an S3-compatible
bucket (TRAINHUB_ARTIFACT_URL=s3://bucket/prefix, core/s3store.py); the interface both
follow is core/store_protocol.py.

Keys are relative, slash-separated names that trainhub builds from ids
(`jobs/<job id>/checkpoints/epoch-0003.pt`); nothing a client sends becomes a key.
"""
from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator

from core.files import atomic_write, unwritable
from core.store_protocol import (  # noqa: F401
    ArtifactStore,
    ArtifactStoreError,
    HashingWriter,
    StoreConfigError,
    check_key,
    copy_capped,
)

if TYPE_CHECKING:
    from core.config import Settings

class LocalArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise ValueError(f"invalid artifact key {key!r}")
        return path

    def save(self, key: str, write: Callable[[BinaryIO], None]) -> tuple[int, str]:
        def hashed(raw: BinaryIO) -> HashingWriter:
            writer = HashingWriter(raw)
            write(writer)  # type: ignore[arg-type]
            return writer

        writer = atomic_write(self.path(key), hashed)
        return writer.size, writer.sha.hexdigest()

    def save_stream(self, key: str, source: BinaryIO, max_bytes: int) -> int:
        size, _ = self.save(key, lambda out: copy_capped(source, out, max_bytes))
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
    """The store the settings name: the bucket of TRAINHUB_ARTIFACT_URL, else the local folder
    $TRAINHUB_DATA_DIR/artifacts."""
    return remote_store() or LocalArtifactStore(_settings().artifacts_dir)


def remote_store() -> ArtifactStore | None:
    """The S3 store when TRAINHUB_ARTIFACT_URL is set, else None (what is written to the local
    folder needs no second copy). StoreConfigError for a malformed URL."""
    settings = _settings()
    if not settings.artifact_url:
        return None
    # One client per process: a forked worker child must not share its parent's connections.
    return _s3_store(settings.artifact_url, settings.s3_endpoint_url,
                     str(settings.data_dir / "tmp"), os.getpid())


@lru_cache(maxsize=4)
def _s3_store(url: str, endpoint_url: str | None, tmp_dir: str, _pid: int) -> ArtifactStore:
    from core.s3store import S3ArtifactStore

    return S3ArtifactStore.from_url(url, endpoint_url=endpoint_url, tmp_dir=Path(tmp_dir))


def data_dir_problem(settings: Settings | None = None) -> str | None:
    """Why this process cannot write its data folder, or None: TRAINHUB_DATA_DIR, and each
    folder in it that trainhub writes and that exists (one may be a mount of its own). A
    worker that could not would take every job and fail it."""
    settings = settings or _settings()
    folders = [settings.data_dir] + [
        folder for folder in (settings.artifacts_dir, settings.tensorboard_dir,
                              settings.cache_dir, settings.data_dir / "tmp") if folder.is_dir()]
    for folder in folders:
        problem = unwritable(folder)
        if problem is not None:
            return f"TRAINHUB_DATA_DIR={str(settings.data_dir)!r}: {problem}"
    return None


def check_store() -> str:
    """Startup check: the data folder can be written and the store the settings name can be
    used (for S3: the URL parses, the endpoint answers, the bucket exists and the credentials
    reach it). Returns a line that describes it; StoreConfigError, one line naming the
    setting, if not."""
    settings = _settings()
    problem = data_dir_problem()
    if problem is not None:
        raise StoreConfigError(problem)
    if not settings.artifact_url:
        return f"artifacts in {settings.artifacts_dir}"
    from core.s3store import S3ArtifactStore

    store = S3ArtifactStore.from_url(settings.artifact_url,
                                     endpoint_url=settings.s3_endpoint_url, check=True)
    return f"artifacts in {store.url}" + (f" at {settings.s3_endpoint_url}"
                                           if settings.s3_endpoint_url else "")


def check_store_or_exit() -> str:
    """check_store() for the server commands: on failure one `error: ...` line on stderr and
    exit code 1, no traceback."""
    try:
        return check_store()
    except StoreConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _settings():
    from core.config import get_settings

    return get_settings()


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


def program_prefix(program_id: str) -> str:
    return f"programs/{program_id}"


def program_key(program_id: str, mode: str) -> str:
    """A program model's archive: mode "train" or "eval"."""
    if mode not in ("train", "eval"):
        raise ValueError(f"a program's mode is train or eval, not {mode!r}")
    return f"programs/{program_id}/{mode}.pt2"
