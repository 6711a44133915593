"""One view of every trainable dataset (the built-ins and the ready uploads)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.builtin_datasets import BUILTIN_DATASETS
from core.errors import FieldError
from core.ids import is_id
from core.states import DatasetStatus
from core.tables import Dataset
from core.tenancy import LOCAL_ADMIN, Tenant, get_owned


@dataclass(frozen=True)
class DatasetView:
    ref: str  # what a job names: a built-in name or an upload id
    name: str
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    train_size: int
    builtin: bool
    cache_key: str | None = None  # uploads: the materialised tensor file's store key


class DatasetNotUsable(FieldError):
    """The named dataset does not exist or is not ready; the message says which."""

    def __init__(self, message: str):
        super().__init__("dataset", message)


def is_upload_ref(ref: str) -> bool:
    return is_id(ref)


def resolve(session: Session, ref: str, tenant: Tenant = LOCAL_ADMIN) -> DatasetView:
    """A built-in, or an upload the tenant may use (another tenant's is an unknown one)."""
    info = BUILTIN_DATASETS.get(ref)
    if info is not None:
        return DatasetView(ref, ref, info.shape, info.classes, info.train_size, True)
    row = get_owned(session, Dataset, ref, tenant, missing=DatasetNotUsable(
        f"unknown dataset {ref[:64]!r}; allowed: {', '.join(BUILTIN_DATASETS)} or the id "
        "of an uploaded dataset"))
    if row.status != DatasetStatus.ready:
        why = f": {row.error}" if row.error else ""
        raise DatasetNotUsable(f"dataset {ref} is {row.status}{why}")
    return DatasetView(ref, row.name, tuple(row.shape), tuple(row.classes),
                       sum(row.counts["train"].values()), False, row.cache_key)
