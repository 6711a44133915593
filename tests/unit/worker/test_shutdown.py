"""A worker that starts shutting down stops its reaper at once: a job its pool hands back
must be re-sent by another worker's reaper, never by this one (whose consumer, still running
during the warm shutdown, would take the message and train the job to its end)."""
from __future__ import annotations

import time

from core.config import Settings
from worker import celery_app
from worker.reaper import ReaperThread


def test_the_shutdown_signal_halts_the_reaper_before_its_next_pass(monkeypatch):
    passes = []
    monkeypatch.setattr("worker.reaper.reap_once", lambda settings: passes.append(time.time()))
    reaper = ReaperThread(Settings(reaper_interval_seconds=0.05))
    monkeypatch.setitem(celery_app._lifecycle, "reaper", reaper)
    reaper.start()
    deadline = time.time() + 10
    while len(passes) < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert len(passes) >= 2  # it was reaping

    celery_app._hand_running_jobs_back(sig="SIGTERM", how="Warm")
    reaper._thread.join(timeout=5)
    assert not reaper._thread.is_alive()
    after = len(passes)
    time.sleep(0.2)  # four intervals: no pass comes
    assert len(passes) == after
