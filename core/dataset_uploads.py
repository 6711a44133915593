"""An upload's lifecycle on the API's side: its checks (names, size, headers, the tenant's
stored bytes), the stored file and its `processing` row, the hand-off to a worker, nothing
left behind when that fails; and deleting an upload. Plain functions, no HTTP.

What the worker does with it (decode, store the tensors, ready or failed) is
core.uploads.ingest; every status change goes through core.datasets.transition.
"""
from __future__ import annotations

import logging
from typing import BinaryIO

from sqlalchemy.orm import Session

from core import datasets, jobs, quota_ledger
from core.artifacts import dataset_prefix, dataset_upload_key, get_store
from core.builtin_datasets import BUILTIN_DATASETS
from core.config import Settings
from core.errors import Conflict, FieldError, TooLarge
from core.ids import new_id
from core.queue import PROCESS_DATASET_TASK, enqueue_or_fail
from core.states import DatasetStatus
from core.tables import Dataset, Job
from core.tenancy import Tenant, get_owned
from core.text import storable, storable_problem
from core.uploads.archives import UploadRejected
from core.uploads.ingest import limits_from_settings, upload_options
from core.uploads.materialize import check_headers

log = logging.getLogger(__name__)

# The columns' sizes (core/tables.py): a dataset's name, the uploaded file's name.
MAX_NAME, MAX_FILENAME = 200, 255


def accept_upload(session: Session, tenant: Tenant, file: BinaryIO, size: int | None,
                  filename: str | None, name: str | None, options: dict,
                  settings: Settings) -> Dataset:
    """Check the upload, store it and its row (`processing`) and queue it for a worker.
    Only its headers are read here, so that what they show wrong (the kind, a .zip's or
    .npz's entries, layout, classes, memory budget) is a FieldError at once: decoding takes
    memory the API process must not spend."""
    storable("name", name)
    filename = checked_filename(filename)
    quota_ledger.check_stored_bytes(session, tenant, settings.tenant_max_stored_bytes)
    check_upload(file, size, options, settings)
    dataset_id = new_id()
    try:
        return _store_and_queue(session, tenant, dataset_id, file, filename, name, options,
                                settings)
    except BaseException:
        # Whatever went wrong once the upload started to be saved (the database or the
        # broker down, a bug), none of its files stay behind.
        discard(session, dataset_id)
        raise


def _too_large(settings: Settings) -> TooLarge:
    limit = settings.dataset_max_upload_bytes
    return TooLarge(f"upload is larger than {limit} bytes (TRAINHUB_DATASET_MAX_UPLOAD_BYTES)")


def check_upload(file: BinaryIO, size: int | None, options: dict, settings: Settings) -> None:
    """The upload's size and headers, read from the request's spooled copy before anything
    is stored: TooLarge, or FieldError naming `file`."""
    if size is not None and size > settings.dataset_max_upload_bytes:
        raise _too_large(settings)
    try:
        check_headers(file, upload_options(options), limits_from_settings())
    except UploadRejected as exc:
        raise FieldError("file", f"dataset rejected: {exc}") from None


def checked_filename(filename: str | None, field: str = "file") -> str | None:
    """The upload's file name as the database stores it; FieldError naming `field` if not."""
    if filename is None:
        return None
    problem = storable_problem(filename)
    if problem:
        raise FieldError(field, f"the file name {problem}")
    if len(filename) > MAX_FILENAME:
        raise FieldError(field, f"the file name is {len(filename)} characters; at most "
                                f"{MAX_FILENAME}")
    return filename


def discard(session: Session, dataset_id: str) -> None:
    """Best effort after a failed upload: drop its files, and a row still `processing`
    (one that would never finish); a row recorded `failed` stays, with its reason."""
    try:
        get_store().delete_prefix(dataset_prefix(dataset_id))
    except Exception as exc:
        log.error("dataset %s: could not delete its files: %s", dataset_id, exc)
    try:
        session.rollback()
        row = session.get(Dataset, dataset_id)
        if row is not None and row.status == DatasetStatus.processing.value:
            session.delete(row)
            session.commit()
    except Exception as exc:
        log.error("dataset %s: could not drop its row: %s", dataset_id, exc)


def _store_and_queue(session: Session, tenant: Tenant, dataset_id: str, file: BinaryIO,
                     filename: str | None, name: str | None, options: dict,
                     settings: Settings) -> Dataset:
    store = get_store()
    file.seek(0)
    try:
        size = store.save_stream(dataset_upload_key(dataset_id), file,
                                 settings.dataset_max_upload_bytes)
    except TooLarge:
        raise _too_large(settings) from None
    quota_ledger.lock_tenant(session, tenant)  # until the row is committed, below
    quota_ledger.check_stored_bytes(session, tenant, settings.tenant_max_stored_bytes,
                                    adding=size)
    default_name = (filename or "upload").split(".")[0][:MAX_NAME] or "upload"
    row = Dataset(id=dataset_id, owner=tenant.user_id, name=name or default_name,
                  stored_bytes=size,
                  status=DatasetStatus.processing.value, source_filename=filename,
                  upload_key=dataset_upload_key(dataset_id), upload_bytes=size, options=options,
                  progress_done=0)
    session.add(row)
    session.commit()
    enqueue_or_fail(session, PROCESS_DATASET_TASK, dataset_id, noun="dataset",
                    purpose=" for processing",
                    mark_failed=lambda reason: datasets.transition(
                        session, dataset_id, DatasetStatus.failed, error=reason))
    return row


def delete_upload(session: Session, dataset_id: str, tenant: Tenant) -> None:
    """An upload of the tenant's and its files; Conflict for a built-in, an upload still
    processing, or one a queued, running or paused job uses."""
    if dataset_id in BUILTIN_DATASETS:
        raise Conflict(f"{dataset_id} is built in and cannot be deleted")
    row = get_owned(session, Dataset, dataset_id, tenant)
    if row.status == DatasetStatus.processing:
        raise Conflict(f"dataset {dataset_id} is still processing")
    jobs.refuse_if_used(session, "dataset", dataset_id, Job.dataset)
    session.delete(row)
    session.commit()
    get_store().delete_prefix(dataset_prefix(dataset_id))
