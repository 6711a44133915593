"""One distributed stack for the end-to-end tests: Postgres + Redis broker + Redis events,
API and one worker as separate processes, started at the same moment on an empty database."""
from __future__ import annotations

import uuid
from contextlib import contextmanager

import pytest

from tests.conftest import create_database
from tests.procs import Proc, env_with, free_port, wait_http


@contextmanager
def running_stack(tmp, worker_name: str, **settings: str):
    """API and one worker as separate processes on a new database, started at the same
    moment on it (each migrates under the advisory lock)."""
    db_url = create_database("trainhub_dist")
    env = env_with(TRAINHUB_DATABASE_URL=db_url, TRAINHUB_DATA_DIR=str(tmp / "data"),
                   TRAINHUB_QUEUE=f"test-{uuid.uuid4().hex[:8]}",
                   TRAINHUB_CANCEL_CHECK_SECONDS="0.5",
                   # Uploads over 200 kB go to the worker.
                   TRAINHUB_DATASET_INLINE_MAX_BYTES=str(200_000), **settings)
    port = free_port()
    api = Proc(["api", "--port", str(port)], env, tmp / "api.log")
    worker = Proc(["worker", "--name", worker_name], env, tmp / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base, api)
        worker.wait_for_log(" ready.")
        yield {"base": base, "db_url": db_url, "env": env, "tmp": tmp, "api": api,
               "worker": worker}
    finally:
        api.stop()
        worker.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    # Uploads over 50 MB are refused.
    with running_stack(tmp_path_factory.mktemp("distributed"), "w1@test",
                       TRAINHUB_DATASET_MAX_UPLOAD_BYTES=str(50 * 1024 * 1024)) as running:
        yield running


@pytest.fixture(scope="session")
def auth_stack(tmp_path_factory):
    """Like `stack`, with authentication on: the API made the first admin key itself
    (admin.key in its data dir); alice and bob are tenants made with `trainhub admin`."""
    from tests.tenants import make_tenant

    tmp = tmp_path_factory.mktemp("auth")
    with running_stack(tmp, "w-auth@test", TRAINHUB_AUTH="on") as running:
        env = running["env"]
        yield {**running, "admin": (tmp / "data" / "admin.key").read_text().strip(),
               "alice": make_tenant(env, "alice"), "bob": make_tenant(env, "bob")}
