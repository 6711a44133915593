"""The workers table on Postgres: a heartbeat row per worker, refreshed, listed while fresh,
deleted when the worker leaves; and the worker's Presence thread that keeps it."""
from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from core import workers
from core.config import get_settings
from core.db import session_scope, upgrade_schema
from core.tables import Worker, utcnow
from worker.presence import Presence, devices

FIELDS = {"hostname": "box", "pid": 1, "queues": ["th.cpu", "th"],
          "devices": [{"name": "cpu", "type": "cpu", "model": "2 cores", "memory_bytes": None}],
          "memory_bytes": 1 << 30, "concurrency": 1}


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def names(stale_after: float = 30) -> set[str]:
    with session_scope() as session:
        return {w.name for w in workers.live(session, stale_after)}


def test_beat_lists_a_worker_until_it_goes_stale_or_leaves():
    name = f"w-{uuid.uuid4().hex[:6]}@test"
    with session_scope() as session:
        workers.beat(session, name, **FIELDS)
    assert name in names()
    with session_scope() as session:
        first = session.get(Worker, name).last_seen
        workers.beat(session, name, **FIELDS)  # a refresh, not a second row
    with session_scope() as session:
        assert session.get(Worker, name).last_seen >= first
        assert {"th.cpu", "th"} <= workers.live_queues(session, 30)
        session.execute(update(Worker).where(Worker.name == name)
                        .values(last_seen=utcnow() - timedelta(seconds=60)))
    assert name not in names(stale_after=30)  # killed: it drops off once stale
    with session_scope() as session:
        workers.leave(session, name)
        assert session.get(Worker, name) is None


def test_presence_beats_from_its_thread_and_deletes_its_row_on_leave():
    name = f"w-{uuid.uuid4().hex[:6]}@test"
    settings = get_settings().model_copy(update={"worker_heartbeat_seconds": 0.05})
    presence = Presence(settings, name, ["th.cpu", "th"], concurrency=2)
    presence.start()
    try:
        deadline = time.monotonic() + 10
        while name not in names() and time.monotonic() < deadline:
            time.sleep(0.02)
        with session_scope() as session:
            row = session.get(Worker, name)
            assert row.queues == ["th.cpu", "th"] and row.concurrency == 2
            assert row.devices == devices() and row.memory_bytes > 0
            seen = row.last_seen
        time.sleep(0.3)
        with session_scope() as session:
            assert session.get(Worker, name).last_seen > seen  # it keeps beating
    finally:
        presence.leave()
    assert name not in names()
    presence.leave()  # twice is harmless


def test_presence_leaves_and_stops_the_worker_once_its_data_folder_is_unwritable(tmp_path,
                                                                                 caplog):
    """The folder turns read-only under a running worker (a disk remounted read-only after
    errors): it leaves GET /workers and asks its worker to stop, rather than take jobs."""
    from tests.mounts import make_read_only, tmpfs

    name = f"w-{uuid.uuid4().hex[:6]}@test"
    stopped = []
    with tmpfs(tmp_path / "data", 1 << 20) as data:
        settings = get_settings().model_copy(update={"worker_heartbeat_seconds": 0.05,
                                                     "data_dir": data})
        presence = Presence(settings, name, ["th"], concurrency=1,
                            on_unwritable=lambda: stopped.append(True))
        presence.start()
        try:
            deadline = time.monotonic() + 10
            while name not in names() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert name in names() and not stopped
            make_read_only(data)
            presence._thread.join(timeout=10)
        finally:
            presence.leave()
    assert stopped == [True] and name not in names()
    assert f"cannot write to {data} (Read-only file system): this worker takes no more " \
           "jobs and stops" in caplog.text
