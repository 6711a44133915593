"""A real API process for a test module: real HTTP, where the point is the wire."""
from __future__ import annotations

import httpx
import pytest

from tests.procs import env_with, start_api


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    """A client of an API process on this process's database and data folder (what the test
    writes there, the API serves), for the module's tests."""
    proc, base = start_api(env_with(), tmp_path_factory.mktemp("api"))
    try:
        with httpx.Client(base_url=base, timeout=15) as client:
            yield client
    finally:
        proc.stop()
