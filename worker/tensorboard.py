"""TensorBoard event files of a job, beside the database: the same metric names, the
global step as the x axis (`tensorboard --logdir $TRAINHUB_DATA_DIR/tensorboard`), in the
job's run folder `<job name>-<8-digit id>` (core.tensorboard_runs).

With an S3 artifact store (TRAINHUB_ARTIFACT_URL) the event files are also copied to the
bucket under jobs/<job id>/tensorboard/: at most every `upload_every` seconds when the
points are flushed, and always on close, so they outlive the worker's disk.
"""
from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import Sequence

from core.artifacts import ArtifactStore, job_prefix, remote_store
from core.files import naming_a_full_disk
from core.tensorboard_runs import run_folder

log = logging.getLogger(__name__)

_DERIVE = object()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def tensorboard_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}/tensorboard"


class TensorBoardLog:
    def __init__(self, directory: Path, purge_step: int | None = None,
                 store: ArtifactStore | None = _DERIVE,  # type: ignore[assignment]
                 key_prefix: str | None = None, upload_every: float = 30.0):
        # purge_step: a resumed run drops what an earlier attempt wrote from that step on,
        # so TensorBoard shows each point once.
        # store: where the event files are copied; by default the S3 store when one is set
        # (None: nowhere), under key_prefix (default jobs/<directory name>/tensorboard).
        self.directory, self.purge_step = directory, purge_step
        self._writer = None
        self.store = remote_store() if store is _DERIVE else store
        self.key_prefix = key_prefix or tensorboard_prefix(directory.name)
        self.upload_every = upload_every
        self._uploaded: dict[str, tuple[int, int]] = {}  # file name -> (size, mtime_ns)
        self._last_upload = time.monotonic()

    @classmethod
    def for_job(cls, root: Path, job_id: str, job_name: str,
                purge_step: int | None = None, **options) -> TensorBoardLog:
        """The job's log in its run folder under root (the folder an earlier attempt wrote
        to, when there is one); its copies go under jobs/<job id>/tensorboard."""
        with naming_a_full_disk(root):
            folder = run_folder(root, job_id, job_name)
        return cls(folder, purge_step, key_prefix=tensorboard_prefix(job_id), **options)

    def add(self, points: Sequence) -> None:
        # A full disk fails the job naming the folder (the writer's thread raises a bare
        # ENOSPC at the next call).
        with naming_a_full_disk(self.directory):
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self.directory.mkdir(parents=True, exist_ok=True)
                self._writer = SummaryWriter(str(self.directory), purge_step=self.purge_step)
            for p in points:
                self._writer.add_scalar(p.name, p.value, p.step)

    def flush(self) -> None:
        if self._writer is not None:
            with naming_a_full_disk(self.directory):
                self._writer.flush()
            if time.monotonic() - self._last_upload >= self.upload_every:
                self.upload()

    def close(self) -> None:
        """Never raises: it runs as the attempt ends, whose outcome (the points are in the
        database) a write failure here must neither hide nor replace."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                with naming_a_full_disk(self.directory):
                    writer.close()
            except Exception as exc:  # noqa: BLE001 - see the docstring
                log.warning("could not close the TensorBoard files in %s: %s",
                            self.directory, exc)
            self.upload()

    def upload(self) -> None:
        """Copy the event files that changed since the last upload to the store; a failure
        is logged, never raised (the metric points are in the database either way)."""
        self._last_upload = time.monotonic()
        if self.store is None or not self.directory.is_dir():
            return
        for path in sorted(self.directory.iterdir()):
            try:
                stat = path.stat()
                if not path.is_file() or path.name.startswith(".") or self._uploaded.get(
                        path.name) == (stat.st_size, stat.st_mtime_ns):
                    continue  # unchanged, or the run's id file (core.tensorboard_runs)
                key = f"{self.key_prefix}/{_UNSAFE.sub('_', path.name)}"
                with open(path, "rb") as f:
                    self.store.save(key, lambda out: shutil.copyfileobj(f, out))
                self._uploaded[path.name] = (stat.st_size, stat.st_mtime_ns)
            except (OSError, ValueError) as exc:
                log.warning("could not copy TensorBoard file %s to the artifact store: %s",
                            path, exc)
