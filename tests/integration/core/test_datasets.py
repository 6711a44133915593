"""core.datasets.transition on the real Postgres: an upload's row moves processing -> ready
or failed with its fields, never out of a terminal status, and a row deleted meanwhile is
None."""
from __future__ import annotations

import pytest

from core import datasets
from core.db import session_scope, upgrade_schema
from core.ids import new_id
from core.states import DatasetStatus, InvalidTransition
from core.tables import Dataset


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def processing_row() -> str:
    dataset_id = new_id()
    with session_scope() as session:
        session.add(Dataset(id=dataset_id, name="d", status="processing", options={},
                            progress_done=0))
    return dataset_id


def status_of(dataset_id: str) -> tuple[str, str | None]:
    with session_scope() as session:
        row = session.get(Dataset, dataset_id, populate_existing=True)
        return row.status, row.error


def test_processing_becomes_failed_with_its_reason_then_stays():
    dataset_id = processing_row()
    with session_scope() as session:
        row = datasets.transition(session, dataset_id, DatasetStatus.failed, error="bad file")
        assert row.status == "failed" and row.error == "bad file"
    with pytest.raises(InvalidTransition) as exc, session_scope() as session:
        datasets.transition(session, dataset_id, DatasetStatus.ready, layout="npz")
    assert exc.value.current is DatasetStatus.failed and exc.value.target is DatasetStatus.ready
    assert str(exc.value).startswith(f"dataset {dataset_id} already ended (failed)")
    assert status_of(dataset_id) == ("failed", "bad file")


def test_processing_becomes_ready_and_cannot_go_back():
    dataset_id = processing_row()
    with session_scope() as session:
        datasets.transition(session, dataset_id, DatasetStatus.ready, layout="npz")
    for target in (DatasetStatus.processing, DatasetStatus.failed):
        with pytest.raises(InvalidTransition), session_scope() as session:
            datasets.transition(session, dataset_id, target)
    assert status_of(dataset_id) == ("ready", None)


def test_a_deleted_row_is_none():
    with session_scope() as session:
        assert datasets.transition(session, new_id(), DatasetStatus.ready) is None
