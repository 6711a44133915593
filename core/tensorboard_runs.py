"""TensorBoard's run folders: one per job, `<job name>-<first 8 digits of its id>`, marked
with the job's id, which deleting and pruning go by.

The name makes TensorBoard's run list read as the jobs table does; the id file is the truth,
since a name can be shared and an id cannot. Folders named by the bare id (written before
runs had names) count as that job's too."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable, Iterable

from core.files import naming_a_full_disk
from core.ids import is_id

ID_FILE = ".trainhub-job"  # TensorBoard reads only *tfevents* files: this one it ignores
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_NAME_CHARS = 64


def run_name(job_name: str, job_id: str, id_digits: int = 8) -> str:
    """`<job name>-<id prefix>`, the name made safe for a folder: ASCII letters, digits and
    `_.-` (a run of others becomes one `_`), none of `_.-` at either end (never hidden, never
    `..`), at most 64 characters."""
    safe = _UNSAFE.sub("_", job_name).strip("._-")[:_NAME_CHARS] or "job"
    return f"{safe}-{job_id[:id_digits]}"


def job_id_of(folder: Path) -> str | None:
    """The job a run folder belongs to; None for a folder trainhub did not make."""
    try:
        text = (folder / ID_FILE).read_text().strip()
    except OSError:
        return folder.name if is_id(folder.name) else None
    return text if is_id(text) else None


def run_folder(root: Path, job_id: str, job_name: str) -> Path:
    """The job's run folder, made and marked with its id: the one it already has (a resumed
    attempt writes on where the last one stopped), else `<name>-<8 digits>`, or with the
    whole id if another job of the same name took that one."""
    candidates = [root / job_id, root / run_name(job_name, job_id),
                  root / run_name(job_name, job_id, id_digits=32)]
    for folder in candidates:
        if folder.is_dir() and job_id_of(folder) == job_id:
            return folder
    for folder in candidates[1:]:
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        try:
            with naming_a_full_disk(folder):
                (folder / ID_FILE).write_text(job_id + "\n")
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)  # unmarked, it would be no one's
            raise
        return folder
    raise FileExistsError(f"no free TensorBoard run folder for job {job_id} in {root}")


def job_runs(root: Path, job_id: str) -> list[Path]:
    """The run folders of one job (normally one)."""
    if not root.is_dir():
        return []
    found = [p for pattern in (f"*-{job_id[:8]}", f"*-{job_id}", job_id)
             for p in root.glob(pattern)]
    return sorted({p for p in found if p.is_dir() and job_id_of(p) == job_id})


def remove_job_runs(root: Path, job_id: str) -> list[Path]:
    """Delete a job's run folders (TensorBoard stops drawing it); returns them."""
    runs = job_runs(root, job_id)
    for folder in runs:
        shutil.rmtree(folder, ignore_errors=True)
    return runs


def prune_runs(root: Path, existing: Callable[[Iterable[str]], set[str]]) -> list[Path]:
    """Delete the run folders whose job no longer exists: existing(ids) answers which of
    the ids are still jobs. Folders trainhub did not make are left alone."""
    if not root.is_dir():
        return []
    owners = {folder: job_id for folder in root.iterdir()
              if folder.is_dir() and (job_id := job_id_of(folder)) is not None}
    if not owners:
        return []
    alive = existing(set(owners.values()))
    gone = sorted(folder for folder, job_id in owners.items() if job_id not in alive)
    for folder in gone:
        shutil.rmtree(folder, ignore_errors=True)
    return gone
