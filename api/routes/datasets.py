"""Datasets: the built-ins, and uploads (ImageFolder archives or .npz) that a worker turns into
tensors. Upload and delete are HTTP adapters over core.dataset_uploads."""
from __future__ import annotations

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
from core import dataset_uploads
from core.builtin_datasets import BUILTIN_DATASETS, DatasetInfo
from core.config import get_settings
from core.dataset_uploads import MAX_NAME
from core.states import DatasetStatus
from core.tables import Dataset
from core.tenancy import get_owned, visible

router = APIRouter(prefix="/datasets", tags=["datasets"])


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
    options = {"test_fraction": test_fraction, "channels": channels,
               "resize": [int(v) for v in resize.split("x")] if resize else None}
    row = dataset_uploads.accept_upload(session, tenant, file.file, file.size, file.filename,
                                        name, options, get_settings())
    return JSONResponse(upload_public(row).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/datasets/{row.id}"})


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=responses(404, 409))
def delete_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    dataset_uploads.delete_upload(session, dataset_id, tenant)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
