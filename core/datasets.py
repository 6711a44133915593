"""One view of every trainable dataset: the built-ins and the ready uploads."""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.catalog import BUILTIN_DATASETS
from core.tables import Dataset

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class DatasetView:
    ref: str  # what a job names: a built-in name or an upload id
    name: str
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    train_size: int
    builtin: bool
    cache_key: str | None = None  # uploads: the materialised tensor file's store key


class DatasetNotUsable(Exception):
    """The named dataset does not exist or is not ready; the message says which."""


def is_upload_ref(ref: str) -> bool:
    return bool(UPLOAD_ID.match(ref))


def resolve(session: Session, ref: str) -> DatasetView:
    info = BUILTIN_DATASETS.get(ref)
    if info is not None:
        return DatasetView(ref, ref, info.shape, info.classes, info.train_size, True)
    row = session.get(Dataset, ref) if is_upload_ref(ref) else None
    if row is None:
        raise DatasetNotUsable(f"unknown dataset {ref!r}; allowed: "
                               f"{', '.join(BUILTIN_DATASETS)} or the id of an uploaded dataset")
    if row.status != "ready":
        why = f": {row.error}" if row.error else ""
        raise DatasetNotUsable(f"dataset {ref} is {row.status}{why}")
    return DatasetView(ref, row.name, tuple(row.shape), tuple(row.classes),
                       sum(row.counts["train"].values()), False, row.cache_key)


def architecture(model: str, view: DatasetView) -> dict:
    """What a checkpoint of `model` trained on this dataset looks like."""
    return {"name": model, "input_shape": list(view.shape), "num_classes": len(view.classes)}


def steps_per_epoch(view: DatasetView, batch_size: int, validation_fraction: float) -> int:
    """Mini-batches per epoch, counted as the loop counts them."""
    n = view.train_size
    if validation_fraction > 0:
        n -= max(1, int(round(n * validation_fraction)))
    return -(-n // batch_size)
