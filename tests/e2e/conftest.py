"""One distributed stack for the end-to-end tests: Postgres + Redis broker + Redis events,
API and one worker (or more) as separate processes, started at the same moment on an empty
database."""
from __future__ import annotations

import uuid
from contextlib import contextmanager

import pytest

from tests.conftest import create_database
from tests.procs import Proc, env_with, free_port, wait_http


@contextmanager
def running_stack(tmp, worker_name: str, *, extra_workers: tuple[str, ...] = (),
                  own_data_dirs: bool = False, **settings: str):
    """API and one worker (and one more per name in extra_workers) as separate processes on
    a new database, started at the same moment on it (each migrates under the advisory
    lock). They share tmp/data, or with own_data_dirs each has its own (tmp/data-api,
    tmp/data-worker1, tmp/data-worker2, ...): then nothing but Postgres, Redis and what the
    settings name (an S3 bucket) is shared."""
    db_url = create_database("trainhub_dist")
    env = env_with(TRAINHUB_DATABASE_URL=db_url, TRAINHUB_DATA_DIR=str(tmp / "data"),
                   TRAINHUB_QUEUE=f"test-{uuid.uuid4().hex[:8]}",
                   TRAINHUB_CANCEL_CHECK_SECONDS="0.5", **settings)
    names = [worker_name, *extra_workers]
    data_dirs = {"api": tmp / "data", **{name: tmp / "data" for name in names}}
    if own_data_dirs:
        data_dirs = {"api": tmp / "data-api",
                     **{name: tmp / f"data-worker{i}" for i, name in enumerate(names, 1)}}
    port = free_port()
    api = Proc(["api", "--port", str(port)], {**env, "TRAINHUB_DATA_DIR": str(data_dirs["api"])},
               tmp / "api.log")
    workers = [Proc(["worker", "--name", name], {**env, "TRAINHUB_DATA_DIR": str(data_dirs[name])},
                    tmp / ("worker.log" if i == 0 else f"worker-{i + 1}.log"))
               for i, name in enumerate(names)]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base, api)
        for worker in workers:
            worker.wait_for_log(" ready.")
        yield {"base": base, "db_url": db_url, "env": env, "tmp": tmp, "api": api,
               "worker": workers[0], "workers": dict(zip(names, workers)),
               "data_dirs": data_dirs}
    finally:
        api.stop()
        for worker in workers:
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
