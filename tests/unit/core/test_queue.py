"""core.queue.enqueue_or_fail: the one rule for a broker that is down when a record (a job,
an upload) is submitted: the record is marked failed and committed, and the error names it."""
from __future__ import annotations

import pytest

from core import queue
from core.queue import ENQUEUE_FAILED, BrokerUnavailable, enqueue_or_fail


class Session:
    def __init__(self):
        self.commits = 0

    def commit(self):
        self.commits += 1


def test_a_sent_task_marks_nothing(monkeypatch):
    sent, failed, session = [], [], Session()
    monkeypatch.setattr(queue, "enqueue", lambda task, *args, queue=None: sent.append(
        (task, args, queue)))
    enqueue_or_fail(session, "t", "abc", noun="job", mark_failed=failed.append, queue="q")
    assert sent == [("t", ("abc",), "q")] and failed == [] and session.commits == 0


def test_a_broker_that_is_down_marks_the_record_failed_and_names_it(monkeypatch):
    def down(*_args, **_kwargs):
        raise BrokerUnavailable("connection refused")

    failed, session = [], Session()
    monkeypatch.setattr(queue, "enqueue", down)
    with pytest.raises(BrokerUnavailable) as exc:
        enqueue_or_fail(session, "t", "abc", noun="dataset", mark_failed=failed.append,
                        purpose=" for processing")
    assert str(exc.value) == "broker unavailable; dataset abc was not queued for processing"
    assert failed == [ENQUEUE_FAILED] and session.commits == 1


def test_another_error_marks_nothing(monkeypatch):
    def bug(*_args, **_kwargs):
        raise RuntimeError("a bug")

    failed, session = [], Session()
    monkeypatch.setattr(queue, "enqueue", bug)
    with pytest.raises(RuntimeError):
        enqueue_or_fail(session, "t", "abc", noun="job", mark_failed=failed.append)
    assert failed == [] and session.commits == 0
