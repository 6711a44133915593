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


@pytest.fixture(scope="module")
def sweeps_cancelled_after():
    """The module's sweeps left running are cancelled at its end: a worker of a later test
    on the same database would otherwise take their next steps in its reaper passes."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.sweeps.lifecycle import cancel_sweep
    from core.tables import Sweep, utcnow

    started = utcnow()
    yield
    with session_scope() as session:
        for sweep in session.scalars(select(Sweep).where(
                Sweep.status == "running", Sweep.created_at >= started)).all():
            cancel_sweep(session, sweep)


def advance_at_once(sweep_id: str, schedulers: int = 4) -> None:
    """`schedulers` threads take the sweep's next step at the same moment."""
    import threading

    from core.config import get_settings
    from core.db import session_scope
    from core.sweeps.trials import advance

    barrier = threading.Barrier(schedulers)

    def step():
        barrier.wait()
        with session_scope() as session:
            advance(session, sweep_id, get_settings())

    threads = [threading.Thread(target=step) for _ in range(schedulers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
