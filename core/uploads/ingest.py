"""Processing an uploaded dataset: validate, decode, store the tensor file, record the result.

Runs in the worker (the `trainhub.process_dataset` task), never in the API: decoding takes
memory, and a worker's pool process is where that may be spent (within
TRAINHUB_DATASET_MAX_DECODED_BYTES). The API only checks the headers (check_headers).
"""
from __future__ import annotations

import logging
import time

import torch

from core import datasets
from core.artifacts import (
    dataset_prefix,
    dataset_tensors_key,
    dataset_upload_key,
    get_store,
)
from core.config import get_settings
from core.db import session_scope
from core.image_decode import release_freed_memory
from core.states import DatasetStatus, InvalidTransition
from core.tables import Dataset, utcnow
from core.tensor_datasets import build_dataset, tensor_file_contents
from core.uploads.archives import Limits, UploadRejected
from core.uploads.materialize import UploadOptions, materialize

log = logging.getLogger(__name__)


def limits_from_settings() -> Limits:
    s = get_settings()
    return Limits(s.dataset_max_entries, s.dataset_max_unpacked_bytes, s.dataset_max_image_pixels,
                  s.dataset_max_decoded_bytes)


def upload_options(stored: dict) -> UploadOptions:
    """A dataset row's `options` (the form's fields) as materialize() takes them."""
    return UploadOptions(test_fraction=stored.get("test_fraction", 0.1),
                         resize=tuple(stored["resize"]) if stored.get("resize") else None,
                         channels=stored.get("channels"))


def process(dataset_id: str) -> str:
    """Returns the dataset's final status: ready or failed (or skipped if not processing)."""
    store = get_store()
    with session_scope() as session:
        row = session.get(Dataset, dataset_id)
        if row is None or row.status != DatasetStatus.processing:
            log.info("dataset %s: nothing to process", dataset_id)
            return "skipped"
        options = upload_options(row.options)
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        with session_scope() as session:
            row = session.get(Dataset, dataset_id)
            row.progress_done, row.progress_total = done, total
        log.info("dataset %s: decoded %d/%d images", dataset_id, done, total)

    try:
        fields = _decode_and_store(dataset_id, options, progress)
    except UploadRejected as exc:
        return _finish(dataset_id, DatasetStatus.failed, error=str(exc), stored_bytes=0)
    except Exception as exc:
        log.exception("dataset %s: processing failed", dataset_id)
        return _finish(dataset_id, DatasetStatus.failed, stored_bytes=0,
                       error=f"processing failed: {type(exc).__name__}: {exc}")
    finally:
        store.delete(dataset_upload_key(dataset_id))  # the tensor file is what jobs read
        release_freed_memory()  # the decoded tensors are gone: the pool process shrinks back
    log.info("dataset %s: ready in %.1fs, %s", dataset_id, time.monotonic() - started,
             {k: sum(v.values()) for k, v in fields["counts"].items()})
    return _finish(dataset_id, DatasetStatus.ready, **fields)


def _decode_and_store(dataset_id: str, options: UploadOptions, progress) -> dict:
    """The upload decoded and its tensor file stored; the row's fields that describe it."""
    store = get_store()
    with store.local_file(dataset_upload_key(dataset_id)) as upload:
        result = materialize(upload, options, limits_from_settings(), progress)
    dataset = build_dataset(dataset_id, result.classes, result.train, result.test)
    key = dataset_tensors_key(dataset_id)
    contents = tensor_file_contents(dataset)
    stored_bytes, _sha = store.save(key, lambda f: torch.save(contents, f))
    counts = {split: _counts(labels, result.classes)
              for split, labels in (("train", result.train.labels), ("test", result.test.labels))}
    return dict(layout=result.layout, classes=result.classes, counts=counts,
                shape=list(dataset.shape), mean=dataset.mean, std=dataset.std, cache_key=key,
                stored_bytes=stored_bytes)


def _counts(labels: torch.Tensor, classes: list[str]) -> dict[str, int]:
    per_class = torch.bincount(labels, minlength=len(classes)).tolist()
    return {name: int(n) for name, n in zip(classes, per_class)}


def _finish(dataset_id: str, status: DatasetStatus, **fields) -> str:
    with session_scope() as session:
        try:
            row = datasets.transition(session, dataset_id, status, finished_at=utcnow(),
                                      **fields)
        except InvalidTransition as exc:  # it ended meanwhile: what it holds stays
            log.warning("dataset %s: not recorded %s: %s", dataset_id, status.value, exc)
            return "skipped"
        if row is None:  # deleted meanwhile
            return "skipped"
    if status is DatasetStatus.failed:
        log.info("dataset %s: failed: %s", dataset_id, fields.get("error"))
        try:  # the row keeps the reason; nothing of it stays in the store
            get_store().delete_prefix(dataset_prefix(dataset_id))
        except Exception as exc:
            log.error("dataset %s: could not delete its files: %s", dataset_id, exc)
    return status.value
