"""core.uploads.ingest.process in this process against the real Postgres: an ImageFolder zip
in the artifact store becomes a ready dataset with its tensor file, a rejected one a failed
row with the reason, and anything not processing is left alone."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.artifacts import (
    dataset_prefix,
    dataset_tensors_key,
    dataset_upload_key,
    get_store,
)
from core.db import session_scope, upgrade_schema
from core.ids import new_id
from core.states import DatasetStatus
from core.tables import Dataset
from core.tensor_datasets import read_tensor_file
from core.uploads.ingest import process
from tests.images import zeros_npz
from tests.memory import MB, Peak
from tests.unit.factories import write_tar, write_zip

OPTIONS = {"test_fraction": 0.1, "channels": None, "resize": None}  # the API's defaults


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "PNG")
    return out.getvalue()


def image_folder(classes: tuple[str, ...], per_class: int) -> dict[str, bytes]:
    return {f"{cls}/{i}.png": png(10 * k + i)
            for k, cls in enumerate(classes) for i in range(per_class)}


def upload(tmp_path, files: dict[str, bytes] | Path, status: str = "processing",
           **options) -> str:
    """Stores the upload (a zip of `files`, or that file) where the API puts one, and the
    row the API inserts beside it."""
    dataset_id = new_id()
    archive = (files if isinstance(files, Path)
               else write_zip(tmp_path / "upload.zip", files, zipfile.ZIP_DEFLATED))
    with open(archive, "rb") as f:
        size = get_store().save_stream(dataset_upload_key(dataset_id), f, 10 * 1024 * 1024)
    with session_scope() as session:
        session.add(Dataset(id=dataset_id, name="pets", status=status,
                            source_filename=archive.name,
                            upload_key=dataset_upload_key(dataset_id), upload_bytes=size,
                            stored_bytes=size, options={**OPTIONS, **options},
                            progress_done=0))
    return dataset_id


def left_in_store(dataset_id: str) -> list[str]:
    folder = get_store().path(dataset_prefix(dataset_id))
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def row(dataset_id: str) -> Dataset:
    with session_scope() as session:
        return session.get(Dataset, dataset_id, populate_existing=True)


def test_an_image_folder_zip_becomes_a_ready_dataset(tmp_path):
    dataset_id = upload(tmp_path, image_folder(("cat", "dog"), 3))
    store = get_store()

    assert process(dataset_id) == "ready"

    ready = row(dataset_id)
    assert ready.status == DatasetStatus.ready.value and ready.error is None
    assert ready.layout == "single" and ready.classes == ["cat", "dog"]
    # test_fraction 0.1 of 3 images rounds to 0: one per class still goes to test.
    assert ready.counts == {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}}
    assert ready.shape == [3, 8, 8]
    assert len(ready.mean) == len(ready.std) == 3
    assert all(0 < m < 1 for m in ready.mean) and all(s > 0 for s in ready.std)
    assert (ready.progress_done, ready.progress_total) == (6, 6)
    assert ready.finished_at is not None
    assert ready.cache_key == dataset_tensors_key(dataset_id) and store.exists(ready.cache_key)
    assert not store.exists(dataset_upload_key(dataset_id))

    with store.open(ready.cache_key) as f:
        tensors = read_tensor_file(dataset_id, f)
    assert list(tensors.classes) == ["cat", "dog"]
    assert tuple(tensors.train.images.shape) == (4, 3, 8, 8)
    assert tuple(tensors.test.images.shape) == (2, 3, 8, 8)
    assert list(tensors.mean) == pytest.approx(ready.mean)


def test_a_rejected_archive_fails_with_the_reason(tmp_path):
    dataset_id = upload(tmp_path, image_folder(("cat",), 4))
    store = get_store()

    assert process(dataset_id) == "failed"

    failed = row(dataset_id)
    assert failed.status == DatasetStatus.failed.value and failed.finished_at is not None
    assert "at least 2 classes" in failed.error and "cat" in failed.error
    assert failed.cache_key is None and failed.classes is None
    assert not store.exists(dataset_upload_key(dataset_id))
    assert not store.exists(dataset_tensors_key(dataset_id))
    assert not store.path(dataset_prefix(dataset_id)).exists()
    assert failed.stored_bytes == 0  # nothing is stored: the tenant's allowance is not used


@pytest.mark.parametrize("case", ["1 GB of zeros in a 1 MB .npz", "six 8x8 PNGs resized to "
                                  "9999x9999 (.zip)", "the same in a .tar.gz"])
def test_an_upload_over_the_memory_budget_fails_before_the_memory_is_spent(tmp_path, case):
    # The uploads of issue 19 that took the API to 9 and 2.8 GB: a worker (this process
    # here) must not be taken down by them either. The default budget is 512 MiB.
    if case.endswith(".npz"):
        path, options = tmp_path / "zeros.npz", {}
        zeros_npz(path)
    else:
        files = {f"{cls}/{i}.png": png(10 * k + i) for k, cls in enumerate(("cat", "dog"))
                 for i in range(3)}
        path = (write_zip(tmp_path / "six.zip", files, zipfile.ZIP_DEFLATED)
                if "zip" in case else write_tar(tmp_path / "six.tar.gz", files, "w:gz"))
        options = {"resize": [9999, 9999]}
    dataset_id = upload(tmp_path, path, **options)

    with Peak() as memory:
        assert process(dataset_id) == "failed"

    failed = row(dataset_id)
    assert "TRAINHUB_DATASET_MAX_DECODED_BYTES" in failed.error, failed.error
    assert memory.rise < 64 * MB, str(memory)
    assert left_in_store(dataset_id) == [] and failed.stored_bytes == 0


@pytest.mark.parametrize("status", ["ready", "failed"])
def test_a_dataset_not_processing_is_skipped_and_left_alone(tmp_path, status):
    dataset_id = upload(tmp_path, image_folder(("cat", "dog"), 3), status=status)

    assert process(dataset_id) == "skipped"

    untouched = row(dataset_id)
    assert untouched.status == status and untouched.classes is None
    assert untouched.progress_done == 0 and untouched.finished_at is None
    assert get_store().exists(dataset_upload_key(dataset_id))
    assert not get_store().exists(dataset_tensors_key(dataset_id))


def test_a_missing_dataset_is_skipped():
    assert process(new_id()) == "skipped"
