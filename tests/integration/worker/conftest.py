"""Fixtures for the worker's tests in process on the real Postgres."""
from __future__ import annotations

import pytest

from core.config import get_settings


@pytest.fixture
def data_dir(monkeypatch, tmp_path):
    """A data dir of the test's own (TRAINHUB_DATA_DIR): what a job writes can be mounted
    over, or listed, without the session's other jobs."""
    monkeypatch.setenv("TRAINHUB_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield get_settings().data_dir
    get_settings.cache_clear()
