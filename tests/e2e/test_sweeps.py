"""Sweeps end to end on the shared stacks (real API and worker processes: a sweep's next
trial is started by the worker whose trial just ended, over Postgres and the broker): grid
and random sweeps on digits to `succeeded`, max_concurrent, a cancel, the 422s, and a tenant's
sweep as its own (its cap makes trials wait; another tenant gets 404)."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from core.sweeps.space import Space
from tests.procs import wait_until
from tests.tenants import client

pytestmark = pytest.mark.slow

BASE = {"model": "lenet", "dataset": "digits",
        "hyperparameters": {"epochs": 1, "batch_size": 64, "log_every": 5}}
LONG = {"model": "lenet", "dataset": "digits",
        "hyperparameters": {"epochs": 50, "batch_size": 4, "log_every": 50}}
CANCEL_BOUND_S = 10  # TRAINHUB_CANCEL_CHECK_SECONDS (0.5 here) + a step + the reply


def create(http: httpx.Client, **body) -> dict:
    resp = http.post("/sweeps", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == f"/sweeps/{resp.json()['id']}"
    return resp.json()


def trials(http: httpx.Client, sweep_id: str) -> list[dict]:
    resp = http.get("/jobs", params={"sweep": sweep_id, "limit": 500})
    assert resp.status_code == 200, resp.text
    return sorted(resp.json()["jobs"], key=lambda j: j["sweep"]["trial"])


def wait_ended(http: httpx.Client, sweep_id: str, timeout: float = 240,
               on_poll=None) -> dict:
    def ended():
        if on_poll:
            on_poll()
        sweep = http.get(f"/sweeps/{sweep_id}").json()
        return sweep if sweep["status"] != "running" else None
    return wait_until(ended, timeout=timeout, interval=0.3)


class EventWatcher:
    """GET /sweeps/{id}/events read in a thread until its `end` event."""

    def __init__(self, base: str, sweep_id: str):
        self.events: list[dict] = []
        self.thread = threading.Thread(target=self._read, args=(base, sweep_id), daemon=True)
        self.thread.start()

    def _read(self, base: str, sweep_id: str) -> None:
        with httpx.stream("GET", f"{base}/sweeps/{sweep_id}/events", timeout=60) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))
                    if self.events[-1]["type"] == "end":
                        return

    def result(self, timeout: float = 30) -> list[dict]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), self.events
        return self.events


def best_of(done: list[dict], metric: str = "eval_accuracy") -> dict:
    top = max(j["metrics"][metric] for j in done)
    return min((j for j in done if j["metrics"][metric] == top),
               key=lambda j: j["sweep"]["trial"])


def test_a_grid_sweep_runs_every_point_and_names_the_best(stack):
    http = httpx.Client(base_url=stack["base"], timeout=30)
    lrs = [0.01, 0.05, 0.2]
    sweep = create(http, name="grid-lr", base=BASE, strategy="grid", max_concurrent=2,
                   space={"hyperparameters.lr": {"grid": lrs}})
    assert sweep["max_trials"] == 3 and sweep["status"] == "running"
    peak = []
    done = wait_ended(http, sweep["id"], on_poll=lambda: peak.append(
        sum(j["status"] in ("queued", "running") for j in trials(http, sweep["id"]))))
    assert done["status"] == "succeeded", done
    assert max(peak) <= 2, peak  # max_concurrent
    jobs = trials(http, sweep["id"])
    assert [j["sweep"]["trial"] for j in jobs] == [0, 1, 2]
    assert [j["sweep"]["values"] for j in jobs] == [{"hyperparameters.lr": lr} for lr in lrs]
    assert all(j["status"] == "succeeded" and j["spec"]["hyperparameters"]["lr"]
               == j["sweep"]["values"]["hyperparameters.lr"] for j in jobs)
    assert [j["name"] for j in jobs] == ["grid-lr-t0", "grid-lr-t1", "grid-lr-t2"]
    best = best_of(jobs)
    assert done["best"]["job_id"] == best["id"], (done["best"], [j["metrics"] for j in jobs])
    assert done["best"]["value"] == best["metrics"]["eval_accuracy"]
    assert done["best"]["values"] == best["sweep"]["values"]
    assert http.get(done["best"]["checkpoint"]).status_code == 200
    assert done["epochs_spent"] == done["epochs_full"] == 3
    assert done["trials"] == {"created": 3, "queued": 0, "running": 0, "succeeded": 3,
                              "failed": 0, "cancelled": 0, "paused": 0, "stopped": 0}
    # Its trials are jobs like any other: metrics, and /predict against the best.
    points = http.get(f"/jobs/{best['id']}/metrics", params={"name": "loss"}).json()
    assert points["metrics"], points
    listed = http.get("/sweeps").json()["items"]
    assert sweep["id"] in [s["id"] for s in listed]


def test_a_random_sweep_draws_each_trials_values_from_the_seed_and_its_number(stack):
    http = httpx.Client(base_url=stack["base"], timeout=30)
    space = {"hyperparameters.lr": {"loguniform": [1e-3, 0.3]},
             "hyperparameters.momentum": {"uniform": [0.8, 0.99]},
             "hyperparameters.batch_size": {"choice": [32, 64]}}
    sweep = create(http, base=BASE, space=space, strategy="random", max_trials=3, seed=5,
                   metric="eval_loss")
    assert sweep["mode"] == "min" and sweep["name"] == "sweep-lenet-digits"
    watcher = EventWatcher(stack["base"], sweep["id"])
    done = wait_ended(http, sweep["id"])
    assert done["status"] == "succeeded", done
    jobs = trials(http, sweep["id"])
    # Its event stream, opened as it started, told each trial's start and end, then `end`.
    events = watcher.result()
    assert events[-1] == {"type": "end", "status": "succeeded"}
    told = [(e["type"], e.get("trial")) for e in events if e["type"].startswith("trial_")]
    assert sorted(told) == sorted((kind, n) for n in range(3) for kind in (
        "trial_created", "trial_started", "trial_finished")), told
    finished = {e["trial"]: e for e in events if e["type"] == "trial_finished"}
    assert [finished[n]["value"] for n in range(3)] == [j["metrics"]["eval_loss"] for j in jobs]
    assert [e for e in events if e["type"] == "sweep"][-1]["status"] == "succeeded"
    assert [j["sweep"]["values"] for j in jobs] == [Space(space).values("random", 5, n)
                                                    for n in range(3)]
    best = min(jobs, key=lambda j: (j["metrics"]["eval_loss"], j["sweep"]["trial"]))
    assert done["best"]["job_id"] == best["id"]
    # One at a time (max_concurrent 1): each trial started after the one before ended.
    for before, after in zip(jobs, jobs[1:]):
        assert after["started_at"] >= before["finished_at"], (before, after)


def test_cancel_stops_every_running_trial_within_the_bound(stack):
    http = httpx.Client(base_url=stack["base"], timeout=30)
    sweep = create(http, base=LONG, space={"hyperparameters.lr": {"choice": [0.01, 0.02]}},
                   max_trials=6, max_concurrent=2)
    wait_until(lambda: any(j["status"] == "running" for j in trials(http, sweep["id"])),
               timeout=60)
    asked = time.monotonic()
    resp = http.post(f"/sweeps/{sweep['id']}/cancel")
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled", resp.text
    wait_until(lambda: all(j["status"] == "cancelled" for j in trials(http, sweep["id"])),
               timeout=CANCEL_BOUND_S, interval=0.1)
    assert time.monotonic() - asked < CANCEL_BOUND_S
    time.sleep(1.5)  # a trial's end (and the reaper) must not start another
    assert len(trials(http, sweep["id"])) == 2
    again = http.post(f"/sweeps/{sweep['id']}/cancel")
    assert again.status_code == 409 and "already ended (cancelled)" in again.json()["detail"]
    assert http.delete(f"/sweeps/{sweep['id']}").status_code == 204
    assert http.get(f"/sweeps/{sweep['id']}").status_code == 404
    assert http.get("/jobs", params={"sweep": sweep["id"]}).status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"space": {"hyperparameters.lr": {"uniform": [0, 0.5]}}}, "space.hyperparameters.lr"),
    ({"space": {"hyperparameters.lrr": {"uniform": [0.1, 0.5]}}}, "space.hyperparameters.lrr"),
    ({"space": {"model": {"choice": []}}}, "space.model"),
    ({"space": {"hyperparameters.lr": {"grid": [0.1, 0.2]}}, "metric": "accuracy"}, "metric"),
    ({"space": {"hyperparameters.lr": {"grid": [0.1]}}, "max_concurrent": 0}, "max_concurrent"),
    ({"space": {"dataset": {"choice": ["digits", "0123456789abcdef0123456789abcdef"]}}},
     "space.dataset"),
])
def test_a_bad_sweep_is_a_422_naming_its_field(stack, body, field):
    resp = httpx.post(f"{stack['base']}/sweeps", json={"base": BASE, **body}, timeout=30)
    assert resp.status_code == 422, resp.text
    assert field in [p.get("field") or ".".join(map(str, p["loc"][1:]))
                     for p in resp.json()["detail"]], resp.json()


def test_a_tenants_sweep_is_its_own_and_its_cap_makes_trials_wait(auth_stack):
    alice = client(auth_stack["base"], auth_stack["alice"])
    bob = client(auth_stack["base"], auth_stack["bob"])
    # 21 trials at once against alice's cap of 20 active jobs (the default): the 21st waits.
    sweep = create(alice, base=LONG, space={"hyperparameters.lr": {"uniform": [0.01, 0.1]}},
                   max_trials=21, max_concurrent=21)
    assert sweep["trials"]["created"] == 20, sweep["trials"]
    assert "trial 20 waits" in sweep["waiting"] and "cap reached" in sweep["waiting"]
    assert bob.get(f"/sweeps/{sweep['id']}").status_code == 404
    assert bob.get("/jobs", params={"sweep": sweep["id"]}).status_code == 404
    assert bob.post(f"/sweeps/{sweep['id']}/cancel").status_code == 404
    assert bob.delete(f"/sweeps/{sweep['id']}").status_code == 404
    assert sweep["id"] not in [s["id"] for s in bob.get("/sweeps").json()["items"]]
    theirs = {j["id"] for j in trials(alice, sweep["id"])}
    assert not theirs & {j["id"] for j in bob.get("/jobs", params={"limit": 500}).json()["jobs"]}
    assert alice.post(f"/sweeps/{sweep['id']}/cancel").status_code == 202
    wait_until(lambda: all(j["status"] == "cancelled" for j in trials(alice, sweep["id"])),
               timeout=CANCEL_BOUND_S)
    assert len(trials(alice, sweep["id"])) == 20
