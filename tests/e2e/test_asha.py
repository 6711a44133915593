"""ASHA end to end on the shared stack (real API and worker processes: a trial pauses in
its worker at its rung's end, the next one starts there, and a promoted trial resumes from
its checkpoint in a later attempt): a promoted trial's loss points are an undisturbed
job's of its configuration, to the bit; the one never promoted ends `stopped`."""
from __future__ import annotations

import httpx
import pytest

from tests.procs import wait_status, wait_until

pytestmark = pytest.mark.slow

BASE = {"model": "lenet", "dataset": "digits",
        "hyperparameters": {"batch_size": 32, "log_every": 5, "seed": 3}}


def points(http: httpx.Client, job_id: str, name: str) -> list[tuple]:
    page = http.get(f"/jobs/{job_id}/metrics", params={"name": name, "limit": 10000}).json()
    return [(p["epoch"], p["step"], p["value"]) for p in page["metrics"]]


def test_a_promoted_trial_resumes_exactly_and_the_other_is_stopped(stack):
    http = httpx.Client(base_url=stack["base"], timeout=30)
    resp = http.post("/sweeps", json={
        "base": BASE, "space": {"hyperparameters.lr": {"loguniform": [0.005, 0.1]}},
        "strategy": "asha", "max_trials": 2, "max_concurrent": 1, "seed": 1,
        "asha": {"min_epochs": 1, "reduction_factor": 2, "max_epochs": 2}})
    assert resp.status_code == 201, resp.text
    sweep = resp.json()
    assert sweep["epochs_full"] == 4 and [r["epoch"] for r in sweep["rungs"]] == [1, 2]
    done = wait_until(lambda: (lambda s: s if s["status"] != "running" else None)(
        http.get(f"/sweeps/{sweep['id']}").json()), timeout=180, interval=0.3)
    assert done["status"] == "succeeded", done
    trials = {j["sweep"]["trial"]: j for j in http.get(
        "/jobs", params={"sweep": sweep["id"]}).json()["jobs"]}
    rung0 = done["rungs"][0]
    assert rung0["reached"] == 2 and [t["promoted"] for t in rung0["trials"]] == [True, False]
    winner, loser = (trials[t["trial"]] for t in rung0["trials"])
    assert winner["status"] == "succeeded" and loser["status"] == "stopped"
    assert [r["reached"] for r in done["rungs"]] == [2, 1]
    assert winner["attempts"] == 2 and winner["spec"]["hyperparameters"]["epochs"] == 2
    assert rung0["trials"][0]["value"] >= rung0["trials"][1]["value"]
    assert done["epochs_spent"] == 3 and done["best"]["job_id"] == winner["id"]
    # The same configuration as one job of max_epochs epochs, never paused.
    spec = {k: v for k, v in winner["spec"].items() if k != "name"}
    plain = http.post("/jobs", json=spec)
    assert plain.status_code == 201, plain.text
    assert wait_status(stack["base"], plain.json()["id"])["status"] == "succeeded"
    for name in ("loss", "eval_accuracy", "eval_loss", "train_loss"):
        assert points(http, winner["id"], name) == points(http, plain.json()["id"], name), name
    # The stopped trial trained its one epoch as the same job would have.
    assert len(points(http, loser["id"], "eval_accuracy")) == 1
