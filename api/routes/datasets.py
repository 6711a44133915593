"""Datasets: the built-ins, and uploads (ImageFolder archives or .npz) that a worker turns into
tensors."""
from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile, status
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator
from sqlalchemy import select

from api.auth import TenantDep
from api.deps import IdPrefixDep, SessionDep
from api.errors import responses
from api.quota_checks import rate_limited
from api.schemas import DatasetList, DatasetPublic, Normalization, UploadProgress
from core import quota_ledger
from core.artifacts import dataset_prefix, dataset_upload_key, get_store
from core.builtin_datasets import BUILTIN_DATASETS, DatasetInfo
from core.config import get_settings
from core.errors import Conflict, FieldError, TooLarge
from core.ids import new_id
from core.queue import PROCESS_DATASET_TASK, BrokerUnavailable, enqueue
from core.states import DatasetStatus, JobStatus
from core.tables import Dataset, Job
from core.tenancy import Tenant, get_owned, visible
from core.text import storable, storable_problem
from core.uploads.archives import UploadRejected
from core.uploads.ingest import limits_from_settings, upload_options
from core.uploads.materialize import check_headers

log = logging.getLogger(__name__)
router = APIRouter(prefix="/datasets", tags=["datasets"])

# The columns' sizes (core/tables.py): a dataset's name, the uploaded file's name.
MAX_NAME, MAX_FILENAME = 200, 255


def builtin_public(info: DatasetInfo) -> DatasetPublic:
    settings = get_settings()
    available, location, state = True, None, DatasetStatus.ready
    if info.folder:
        folder = settings.resolved_dataset_root / info.folder
        present = all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in info.files)
        cached = (settings.cache_dir / f"{info.name}.pt").exists()
        location = str(folder)
        available = present or cached or settings.allow_download
        state = (DatasetStatus.ready if present or cached else
                 DatasetStatus.downloads_on_first_use if settings.allow_download
                 else DatasetStatus.missing)
    return DatasetPublic(id=info.name, name=info.name, description=info.description,
                         source="builtin", shape=list(info.shape),
                         num_classes=len(info.classes), classes=list(info.classes),
                         counts={"train": info.train_size, "test": info.test_size},
                         status=state, available=available, location=location)


def upload_public(row: Dataset) -> DatasetPublic:
    return DatasetPublic(
        id=row.id, name=row.name, source="upload", status=DatasetStatus(row.status),
        error=row.error, layout=row.layout, shape=row.shape,
        num_classes=len(row.classes) if row.classes else None, classes=row.classes,
        counts=row.counts,
        normalization=Normalization(mean=row.mean, std=row.std) if row.mean else None,
        options=row.options, upload_bytes=row.upload_bytes, stored_bytes=row.stored_bytes,
        owner=row.owner, source_filename=row.source_filename,
        progress=UploadProgress(done=row.progress_done, total=row.progress_total),
        created_at=row.created_at, finished_at=row.finished_at)


@router.get("", response_model=DatasetList, responses=responses(422))
def list_datasets(session: SessionDep, tenant: TenantDep,
                  id_prefix: IdPrefixDep = None) -> DatasetList:
    """The built-ins, then the caller's uploads (an admin's: everyone's), newest first; with
    id_prefix, only the uploads whose id starts with it (a built-in's id is its name)."""
    query = visible(select(Dataset), Dataset, tenant)
    if id_prefix is not None:
        query = query.where(Dataset.id.startswith(id_prefix))
    uploads = session.scalars(query.order_by(Dataset.created_at.desc())).all()
    builtins = [] if id_prefix is not None else BUILTIN_DATASETS.values()
    return DatasetList(datasets=[builtin_public(i) for i in builtins]
                       + [upload_public(r) for r in uploads])


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=responses(404))
def read_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> DatasetPublic:
    if dataset_id in BUILTIN_DATASETS:
        return builtin_public(BUILTIN_DATASETS[dataset_id])
    return upload_public(get_owned(session, Dataset, dataset_id, tenant))


def _form_number(value):
    """A multipart field arrives as text: '3' must meet Literal[1, 3] as the number 3."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=DatasetPublic,
             responses=responses(409, 413, 422, 429, 503),
             dependencies=[rate_limited("datasets")])
def upload_dataset(
    session: SessionDep,
    tenant: TenantDep,
    file: Annotated[UploadFile, File(description=".tar.gz, .tar or .zip in ImageFolder layout "
                                                 "(train/<class>/*, test/<class>/* or "
                                                 "<class>/*), or .npz with x_train, y_train, "
                                                 "x_test, y_test [, classes]")],
    name: Annotated[str | None, Form(max_length=MAX_NAME)] = None,
    test_fraction: Annotated[float, Form(gt=0, le=0.5, description="for a single <class>/* "
                                                                   "tree")] = 0.1,
    resize: Annotated[str | None, Form(pattern=r"^[1-9][0-9]{0,3}x[1-9][0-9]{0,3}$",
                                       description="HxW every image is resized to")] = None,
    channels: Annotated[Literal[1, 3] | None, BeforeValidator(_form_number),
                        Form(description="convert every image to 1 (L) or 3 (RGB) "
                                         "channels")] = None,
) -> Response:
    """Accepted, `processing` (202): a worker decodes it, and GET /datasets/{id} says when it
    is ready or why it failed. Here only its headers are read, so that what they show wrong
    (the kind, a .zip's or .npz's entries, layout, classes, memory budget) is a 422 at once:
    decoding takes memory the API process must not spend."""
    storable("name", name)
    filename = _checked_filename(file.filename)
    settings = get_settings()
    quota_ledger.check_stored_bytes(session, tenant, settings.tenant_max_stored_bytes)
    options = {"test_fraction": test_fraction, "channels": channels,
               "resize": [int(v) for v in resize.split("x")] if resize else None}
    _check_upload(file, options)
    dataset_id = new_id()
    try:
        return _accept(session, tenant, dataset_id, file, filename, name, options)
    except BaseException:
        # Whatever went wrong once the upload started to be saved (the database or the
        # broker down, a bug), none of its files stay behind.
        _discard(session, dataset_id)
        raise


def _too_large() -> TooLarge:
    limit = get_settings().dataset_max_upload_bytes
    return TooLarge(f"upload is larger than {limit} bytes (TRAINHUB_DATASET_MAX_UPLOAD_BYTES)")


def _check_upload(file: UploadFile, options: dict) -> None:
    """The upload's size and headers, read from the request's spooled copy before anything
    is stored: TooLarge, or FieldError naming `file`."""
    if file.size is not None and file.size > get_settings().dataset_max_upload_bytes:
        raise _too_large()
    try:
        check_headers(file.file, upload_options(options), limits_from_settings())
    except UploadRejected as exc:
        raise FieldError("file", f"dataset rejected: {exc}") from None


def _checked_filename(filename: str | None) -> str | None:
    """The upload's file name as the database stores it; FieldError naming `file` if not."""
    if filename is None:
        return None
    problem = storable_problem(filename)
    if problem:
        raise FieldError("file", f"the file name {problem}")
    if len(filename) > MAX_FILENAME:
        raise FieldError("file", f"the file name is {len(filename)} characters; at most "
                                 f"{MAX_FILENAME}")
    return filename


def _discard(session, dataset_id: str) -> None:
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


def _accept(session, tenant: Tenant, dataset_id: str, file: UploadFile, filename: str | None,
            name: str | None, options: dict) -> Response:
    settings = get_settings()
    store = get_store()
    file.file.seek(0)
    try:
        size = store.save_stream(dataset_upload_key(dataset_id), file.file,
                                 settings.dataset_max_upload_bytes)
    except TooLarge:
        raise _too_large() from None
    quota_ledger.lock_tenant(session, tenant)  # until the row is committed, below
    quota_ledger.check_stored_bytes(session, tenant, settings.tenant_max_stored_bytes, adding=size)
    default_name = (filename or "upload").split(".")[0][:MAX_NAME] or "upload"
    row = Dataset(id=dataset_id, owner=tenant.user_id, name=name or default_name,
                  stored_bytes=size,
                  status=DatasetStatus.processing.value, source_filename=filename,
                  upload_key=dataset_upload_key(dataset_id), upload_bytes=size, options=options,
                  progress_done=0)
    session.add(row)
    session.commit()
    try:
        enqueue(PROCESS_DATASET_TASK, dataset_id)
    except BrokerUnavailable as exc:
        row.status = DatasetStatus.failed.value
        row.error = "could not enqueue: the broker was unreachable"
        session.commit()
        raise BrokerUnavailable(f"broker unavailable; dataset {dataset_id} was not queued "
                                "for processing") from exc
    return JSONResponse(upload_public(row).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/datasets/{dataset_id}"})


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=responses(404, 409))
def delete_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    if dataset_id in BUILTIN_DATASETS:
        raise Conflict(f"{dataset_id} is built in and cannot be deleted")
    row = get_owned(session, Dataset, dataset_id, tenant)
    if row.status == DatasetStatus.processing:
        raise Conflict(f"dataset {dataset_id} is still processing")
    active = session.scalars(select(Job.id).where(
        Job.dataset == dataset_id,
        Job.status.in_([JobStatus.queued.value, JobStatus.running.value]))).all()
    if active:
        raise Conflict(f"dataset {dataset_id} is used by {len(active)} queued or "
                       f"running job(s): {', '.join(active[:5])}")
    session.delete(row)
    session.commit()
    get_store().delete_prefix(dataset_prefix(dataset_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
