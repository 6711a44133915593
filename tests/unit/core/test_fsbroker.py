"""The embedded broker writes a message under a name no queue reads and renames it into
place: a consumer polling meanwhile never finds a half-written message (kombu's own
transport creates the file first, and a poll in between stopped a worker)."""
from __future__ import annotations

import os

from kombu import Connection

from core import fsbroker
from core.config import Settings
from core.queue import celery_config


def connection(tmp_path) -> Connection:
    options = celery_config(Settings(data_dir=tmp_path, broker_url=None))
    return Connection(options["broker_url"], transport=options["broker_transport"],
                      transport_options=options["broker_transport_options"])


def test_the_embedded_broker_uses_the_atomic_transport(tmp_path):
    with connection(tmp_path) as conn:
        assert isinstance(conn.default_channel, fsbroker.Channel)


def test_no_message_file_is_visible_until_it_is_whole(tmp_path, monkeypatch):
    seen_before_rename = []
    real_replace = os.replace

    def replace(src, dst):
        folder = os.path.dirname(dst)
        seen_before_rename.append(sorted(os.listdir(folder)))
        real_replace(src, dst)

    monkeypatch.setattr(fsbroker.os, "replace", replace)
    with connection(tmp_path) as conn:
        queue = conn.SimpleQueue("th.cpu")
        queue.put({"job": "x" * 10_000})
        assert len(seen_before_rename) == 1
        names = seen_before_rename[0]
        assert len(names) == 1 and names[0].startswith(fsbroker.PARTIAL_PREFIX)
        assert not [n for n in names if n.endswith(".msg")]
        message = queue.get(timeout=5)
        assert message.payload == {"job": "x" * 10_000}
        message.ack()
        queue.close()
    assert not [n for n in os.listdir(tmp_path / "broker" / "queue")
                if n.startswith(fsbroker.PARTIAL_PREFIX)]


def test_an_idle_worker_looks_for_jobs_ten_times_a_second(tmp_path):
    with connection(tmp_path) as conn:
        assert conn.transport.polling_interval == 0.1  # kombu's default, 1 s, delayed jobs
