"""A checkpoint's export, made once and kept in the artifact store: the file at
`jobs/<job id>/exports/<checkpoint sha256>.<format>`, under the job's prefix (deleting the
job deletes it, core.job_deletion) and named by the checkpoint's content (a rewritten
checkpoint has a new hash: never a stale export). A note beside it (`<key>.json`: its size
and sha256) is written after the file: an export without its note is incomplete and is
made again."""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.artifacts import ArtifactStore, job_prefix
from core.export import EXPORTERS, ExportedClassifier


@dataclass(frozen=True)
class StoredExport:
    key: str
    size: int
    sha256: str


# One export at a time in a process: tracing holds process-wide state, and each export
# takes the cores for seconds; a second request for the same file waits and finds it made.
_EXPORTING = threading.Lock()


def export_key(job_id: str, checkpoint_sha256: str, fmt: str) -> str:
    return f"{job_prefix(job_id)}/exports/{checkpoint_sha256}.{fmt}"


def note_key(key: str) -> str:
    return f"{key}.json"


def drop_exports(store: ArtifactStore, job_id: str, checkpoint_sha256: str) -> None:
    """Delete a checkpoint's exports in every format (retention dropped the checkpoint)."""
    for fmt in EXPORTERS:
        key = export_key(job_id, checkpoint_sha256, fmt)
        store.delete(note_key(key))  # the note first: a half-deleted export is incomplete
        store.delete(key)


def find_export(store: ArtifactStore, key: str) -> StoredExport | None:
    """The export stored at `key` when it is complete (its note written), else None."""
    if not (store.exists(note_key(key)) and store.exists(key)):
        return None
    with store.open(note_key(key)) as f:
        note = json.load(f)
    return StoredExport(key, int(note["size"]), str(note["sha256"]))


def stored_export(store: ArtifactStore, job_id: str, checkpoint_sha256: str, fmt: str,
                  load: Callable[[], ExportedClassifier]) -> StoredExport:
    """The checkpoint's export in `fmt`, made now (of the classifier `load` gives) unless
    the store has it. core.export.ExportError when
    the network cannot be exported; what `load` raises goes through as it is."""
    key = export_key(job_id, checkpoint_sha256, fmt)
    found = find_export(store, key)
    if found is not None:
        return found
    with _EXPORTING:
        found = find_export(store, key)  # made while this request waited
        if found is not None:
            return found
        classifier = load()
        with tempfile.TemporaryDirectory(prefix="trainhub-export-") as folder:
            path = Path(folder) / f"model.{fmt}"
            EXPORTERS[fmt](classifier, path)
            with open(path, "rb") as source:
                size, sha256 = store.save(key, lambda out: shutil.copyfileobj(source, out,
                                                                              1 << 20))
        note = json.dumps({"size": size, "sha256": sha256, "format": fmt,
                           "checkpoint_sha256": checkpoint_sha256}).encode()
        store.save(note_key(key), lambda out: out.write(note))
        return StoredExport(key, size, sha256)

