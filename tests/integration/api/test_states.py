"""GET /states: the job, dataset and sweep state machines as core.states has them (their one
home), and nothing else keeps a copy: not the web page's scripts, not the CLI."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import app
from core.states import (
    ALLOWED,
    DATASET_ALLOWED,
    DATASET_TERMINAL,
    SWEEP_ALLOWED,
    TERMINAL,
    DatasetStatus,
    JobStatus,
    SweepStatus,
)

STATIC = Path(__file__).resolve().parents[3] / "api" / "static"


@pytest.fixture(scope="module")
def states():
    # No lifespan: the route reads no database.
    resp = TestClient(app).get("/states")
    assert resp.status_code == 200
    return resp.json()


def test_the_job_machine_is_core_states(states):
    job = states["job"]
    assert job["statuses"] == ["queued", "running", "succeeded", "failed", "cancelled",
                               "paused", "stopped"]
    assert job["statuses"] == [s.value for s in JobStatus]
    assert job["terminal"] == ["succeeded", "failed", "cancelled", "stopped"]
    assert set(job["terminal"]) == {s.value for s in TERMINAL}
    assert {(a, b) for a, targets in job["transitions"].items() for b in targets} == {
        (a.value, b.value) for a, targets in ALLOWED.items() for b in targets}


def test_the_dataset_machine_is_core_states(states):
    dataset = states["dataset"]
    assert dataset["statuses"] == [s.value for s in DatasetStatus]
    assert dataset["terminal"] == ["ready", "failed"]
    assert set(dataset["terminal"]) == {s.value for s in DATASET_TERMINAL}
    assert dataset["transitions"] == {
        a.value: [b.value for b in DatasetStatus if b in targets]
        for a, targets in DATASET_ALLOWED.items()}


def test_the_sweep_machine_is_core_states(states):
    sweep = states["sweep"]
    assert sweep["statuses"] == ["running", "succeeded", "failed", "cancelled"]
    assert sweep["statuses"] == [s.value for s in SweepStatus]
    assert sweep["terminal"] == ["succeeded", "failed", "cancelled"]
    assert sweep["terminal"] == [s.value for s in SweepStatus if s.is_terminal]
    assert sweep["transitions"] == {"running": ["succeeded", "failed", "cancelled"]}
    assert {(a, b) for a, targets in sweep["transitions"].items() for b in targets} == {
        (a.value, b.value) for a, targets in SWEEP_ALLOWED.items() for b in targets}


def test_the_page_reads_the_sweep_machine_under_the_key_states_gives(states):
    # js/dom.js falls back to its own list of a sweep's ends when `sweep` is missing: a
    # renamed key would leave the page on that copy without an error.
    dom = (STATIC / "js" / "dom.js").read_text(encoding="utf-8")
    assert "states.sweep.terminal" in dom and "sweep" in states


def test_states_needs_credentials_as_every_data_route(monkeypatch):
    from core.config import get_settings

    monkeypatch.setenv("TRAINHUB_AUTH", "on")
    get_settings.cache_clear()
    try:
        assert TestClient(app).get("/states").status_code == 401
    finally:
        get_settings.cache_clear()


def test_no_script_of_the_page_keeps_its_own_list_of_job_states():
    terminal = re.compile(r'["\'](succeeded|failed|cancelled)["\']\s*,\s*'
                          r'["\'](succeeded|failed|cancelled)["\']')
    copies = [f"{path.relative_to(STATIC)}:{n}"
              for path in STATIC.rglob("*.js") if "vendor" not in path.parts
              for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
              if terminal.search(line)]
    assert not copies, copies


def test_the_cli_stops_following_at_the_terminal_states_of_core_states():
    from cli.logs import ENDED

    assert ENDED == {s.value for s in TERMINAL}


def test_no_cli_module_keeps_its_own_list_of_states():
    from cli.sweeps import ENDED

    assert ENDED == {s.value for s in SweepStatus if s.is_terminal}
    terminal = re.compile(r'["\'](succeeded|failed|cancelled)["\']\s*,\s*'
                          r'["\'](succeeded|failed|cancelled)["\']')
    cli = STATIC.parents[1] / "cli"
    copies = [f"cli/{path.name}:{n}" for path in cli.rglob("*.py")
              for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
              if terminal.search(line)]
    assert not copies, copies
