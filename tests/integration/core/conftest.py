"""Fixtures of the core service tests on the real Postgres."""
from __future__ import annotations

import pytest

from core import queue


@pytest.fixture
def sent(monkeypatch):
    """What was handed to the broker, as (task, args, queue) (nothing reaches Redis: no
    worker runs in these tests)."""
    messages = []
    monkeypatch.setattr(queue, "enqueue",
                        lambda task, *args, queue=None: messages.append((task, args, queue)))
    return messages
