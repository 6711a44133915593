"""api.sweep_events' `end`: once the sweep and every trial of it have ended, by core.states'
terminal states (a paused trial of a sweep just cancelled has not ended yet)."""
from __future__ import annotations

import asyncio
import json

from api import sweep_events
from core.states import JobStatus


def trials(**counts: int) -> dict[str, int]:
    return {"created": sum(counts.values()), **{s.value: 0 for s in JobStatus}, **counts}


def state(status: str, **counts: int) -> dict:
    return {"status": status, "trials": trials(**counts), "best": None, "waiting": None,
            "epochs_spent": 0}


def frames(states: list[dict], monkeypatch) -> list[dict]:
    reads = iter(states)
    monkeypatch.setattr(sweep_events, "_snapshot", lambda _sweep_id: (next(reads), []))
    monkeypatch.setattr(sweep_events, "POLL_S", 0.0)

    async def collect() -> list[dict]:
        return [json.loads(f.removeprefix("data: ")) async for f in
                sweep_events.sweep_events("s") if f.startswith("data: ")]

    return asyncio.run(collect())


def test_the_stream_ends_only_once_a_cancelled_sweep_s_paused_trial_has_ended(monkeypatch):
    got = frames([state("running", running=1, paused=1),
                  state("cancelled", paused=1, cancelled=1),  # its cancel not yet landed
                  state("cancelled", cancelled=2)], monkeypatch)
    assert [(f["type"], f["status"]) for f in got] == [
        ("sweep", "running"), ("sweep", "cancelled"), ("sweep", "cancelled"),
        ("end", "cancelled")]


def test_a_sweep_whose_trials_all_ended_ends_its_stream_at_once(monkeypatch):
    got = frames([state("succeeded", succeeded=2, stopped=3)], monkeypatch)
    assert [f["type"] for f in got] == ["sweep", "end"]
    assert sweep_events._ended(state("failed", failed=1))
    assert not sweep_events._ended(state("running", succeeded=1))
    assert not sweep_events._ended(state("succeeded", queued=1))
