"""Processing an uploaded dataset: validate, decode, store the tensor file, record the result.

Runs in the worker (the `trainhub.process_dataset` task) for large uploads and in the API
request for small ones; both call process().
"""
from __future__ import annotations

import logging
import time

import torch

from core.artifacts import dataset_tensors_key, dataset_upload_key, get_store
from core.config import get_settings
from core.db import session_scope
from core.imagedata import build_dataset, tensor_file_contents
from core.states import DatasetStatus
from core.tables import Dataset, utcnow
from core.uploads.archives import Limits, UploadRejected
from core.uploads.materialize import UploadOptions, materialize

log = logging.getLogger(__name__)


def limits_from_settings() -> Limits:
    s = get_settings()
    return Limits(s.dataset_max_entries, s.dataset_max_unpacked_bytes, s.dataset_max_image_pixels)


def process(dataset_id: str) -> str:
    """Returns the dataset's final status: ready or failed (or skipped if not processing)."""
    store = get_store()
    with session_scope() as session:
        row = session.get(Dataset, dataset_id)
        if row is None or row.status != DatasetStatus.processing:
            log.info("dataset %s: nothing to process", dataset_id)
            return "skipped"
        options = UploadOptions(test_fraction=row.options.get("test_fraction", 0.1),
                                resize=tuple(row.options["resize"]) if row.options.get("resize") else None,
                                channels=row.options.get("channels"))
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        with session_scope() as session:
            row = session.get(Dataset, dataset_id)
            row.progress_done, row.progress_total = done, total
        log.info("dataset %s: decoded %d/%d images", dataset_id, done, total)

    try:
        with store.local_file(dataset_upload_key(dataset_id)) as upload:
            result = materialize(upload, options, limits_from_settings(), progress)
        dataset = build_dataset(dataset_id, result.classes, result.train, result.test)
        key = dataset_tensors_key(dataset_id)
        contents = tensor_file_contents(dataset)
        stored_bytes, _sha = store.save(key, lambda f: torch.save(contents, f))
    except UploadRejected as exc:
        return _finish(dataset_id, DatasetStatus.failed, error=str(exc))
    except Exception as exc:
        log.exception("dataset %s: processing failed", dataset_id)
        return _finish(dataset_id, DatasetStatus.failed,
                       error=f"processing failed: {type(exc).__name__}: {exc}")
    finally:
        store.delete(dataset_upload_key(dataset_id))  # the tensor file is what jobs read
    counts = {split: _counts(labels, result.classes)
              for split, labels in (("train", result.train.labels), ("test", result.test.labels))}
    log.info("dataset %s: ready in %.1fs, %s", dataset_id, time.monotonic() - started,
             {k: sum(v.values()) for k, v in counts.items()})
    return _finish(dataset_id, DatasetStatus.ready, layout=result.layout, classes=result.classes,
                   counts=counts, shape=list(dataset.shape), mean=dataset.mean, std=dataset.std,
                   cache_key=key, stored_bytes=stored_bytes)


def _counts(labels: torch.Tensor, classes: list[str]) -> dict[str, int]:
    per_class = torch.bincount(labels, minlength=len(classes)).tolist()
    return {name: int(n) for name, n in zip(classes, per_class)}


def _finish(dataset_id: str, status: DatasetStatus, **fields) -> str:
    with session_scope() as session:
        row = session.get(Dataset, dataset_id)
        if row is None:  # deleted meanwhile
            return "skipped"
        row.status, row.finished_at = status.value, utcnow()
        for name, value in fields.items():
            setattr(row, name, value)
    if status is DatasetStatus.failed:
        log.info("dataset %s: failed: %s", dataset_id, fields.get("error"))
    return status.value
