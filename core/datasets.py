"""One view of every trainable dataset (the built-ins and the ready uploads), and the one way
an upload's status changes (transition: its state machine is core.states')."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from core.builtin_datasets import BUILTIN_DATASETS
from core.errors import FieldError
from core.ids import is_id
from core.states import DATASET_ALLOWED, DatasetStatus, InvalidTransition
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


def transition(session: Session, dataset_id: str, target: DatasetStatus,
               **fields: Any) -> Dataset | None:
    """Move an upload's row to target, with fields, if its status allows it; None when the
    row is gone (deleted meanwhile); else InvalidTransition. Atomic as core.jobs.transition
    is: the WHERE clause carries the allowed sources, so a terminal status is never left."""
    sources = [s.value for s, targets in DATASET_ALLOWED.items() if target in targets]
    result = session.execute(update(Dataset)
                             .where(Dataset.id == dataset_id, Dataset.status.in_(sources))
                             .values(status=target.value, **fields)
                             .execution_options(synchronize_session=False))
    row = session.get(Dataset, dataset_id, populate_existing=True)
    if row is None:
        return None
    if result.rowcount == 0:
        raise InvalidTransition(DatasetStatus(row.status), target, dataset_id)
    return row
