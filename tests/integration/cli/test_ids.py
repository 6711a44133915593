"""Ids as people type them, against the real API: every verb that takes a job's, an
upload's or a sweep's id takes a unique start of it; a start several ids share is one error
line listing them; a start no id has is the 404 a whole unknown id gets. Underneath, `GET
/jobs`, `GET /datasets` and `GET /sweeps` take `id_prefix` (hex digits only, a 422 naming it
otherwise)."""
from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import update

from core.db import session_scope
from core.sweeps.spec import SweepSpec, check
from core.tables import Dataset, Job, JobLog, Sweep
from tests.integration.cli.conftest import (
    assert_one_error_line,
    finish_job,
    tutorial_points,
)


def crafted_ids() -> tuple[str, str, str]:
    """A 12-digit start shared by two new ids, and the two ids."""
    shared = uuid.uuid4().hex[:12]
    return shared, shared + "a" + uuid.uuid4().hex[:19], shared + "b" + uuid.uuid4().hex[:19]


def submit(cli, name: str, *flags: str) -> str:
    run = cli("submit", "--model", "mlp", "--dataset", "digits", "--batch-size", "16",
              "--log-every", "20", "--name", name, *flags)
    assert run.exit_code == 0, run.stderr
    return run.lines[-1]


def renamed(job_id: str, new_id: str) -> str:
    """Give a just-submitted (queued, nothing written yet) job the id the test chose."""
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(id=new_id))
    return new_id


def upload_row(dataset_id: str, name: str) -> None:
    """A ready upload, as a worker leaves one (the tests here read it; nothing trains)."""
    with session_scope() as session:
        session.add(Dataset(
            id=dataset_id, name=name, status="ready", source_filename=f"{name}.npz",
            upload_bytes=0, options={}, layout="npz", classes=["even", "odd"],
            counts={"train": {"even": 20, "odd": 20}, "test": {"even": 5, "odd": 5}},
            shape=[1, 8, 8], mean=[0.5], std=[0.25], cache_key=f"datasets/{dataset_id}/x.pt",
            progress_done=50, progress_total=50))


@pytest.fixture
def jobs(cli):
    """Two jobs whose ids share 12 digits: `done` succeeded with points and a log line,
    `queued` waits."""
    shared, done_id, queued_id = crafted_ids()
    done = renamed(submit(cli, "prefix-done"), done_id)
    queued = renamed(submit(cli, "prefix-queued"), queued_id)
    finish_job(done, tutorial_points())
    with session_scope() as session:
        session.add(JobLog(job_id=done, level="INFO", attempt=1, source="test",
                           message="a line of the job's own"))
    return {"shared": shared, "done": done, "queued": queued}


def test_every_verb_takes_the_start_of_a_job_id(cli, jobs, tmp_path):
    done, queued = jobs["done"], jobs["queued"]
    start = done[:13]  # the shared 12 digits and one of its own
    shown = cli("show", start)
    assert shown.exit_code == 0, shown.stderr
    assert done in shown.stdout and "prefix-done" in shown.stdout
    logs = cli("logs", start)
    assert logs.exit_code == 0 and "a line of the job's own" in logs.stdout, logs.stderr
    metrics = cli("metrics", start, "--csv")
    assert metrics.exit_code == 0 and len(metrics.lines) == 1 + len(tutorial_points())
    followed = cli("follow", start)
    assert followed.exit_code == 0, followed.stderr
    assert followed.lines[0] == f"following job {done} (prefix-done): mlp on digits"
    assert followed.lines[-1].startswith(f"job {done} succeeded")
    listing = cli("checkpoints", start)
    assert listing.exit_code == 0 and listing.lines == [
        f"job {done} has no checkpoint yet (one is written at the end of each epoch)"]
    # download and predict reach the job itself: its missing checkpoint, not a missing job.
    target = tmp_path / "model.pt"
    assert "not found" not in assert_one_error_line(cli("download", start, "-o", target))
    assert not target.exists()
    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG not really")
    assert assert_one_error_line(cli("predict", image, "--job", start)).startswith(
        "error: 409 ")
    # A fine-tune from it names the whole id (the API refuses it: no checkpoint to start from).
    assert done in assert_one_error_line(
        cli("submit", "--model", "mlp", "--dataset", "digits", "--set",
            f"init_from.job_id={start}"))
    cancelled = cli("cancel", queued[:13].upper())
    assert cancelled.exit_code == 0 and cancelled.lines == [f"job {queued} cancelled"]


@pytest.mark.parametrize("verb", [
    ["show"], ["logs"], ["metrics"], ["follow"], ["checkpoints"], ["cancel"],
    ["download", "-o", "unused.pt"]])
def test_a_start_two_jobs_share_is_an_error_listing_both(cli, jobs, verb):
    line = assert_one_error_line(cli(verb[0], jobs["shared"], *verb[1:]))
    assert line == (f"error: job id '{jobs['shared']}' starts 2 jobs: "
                    f"{jobs['queued']} (prefix-queued), {jobs['done']} (prefix-done); give more "
                    "of its digits")


def test_a_start_no_job_has_is_the_404_of_an_unknown_id(cli, tmp_path):
    unknown = uuid.uuid4().hex[:12]
    for verb in (["show"], ["logs"], ["metrics"], ["follow"], ["checkpoints"], ["cancel"],
                 ["download", "-o", str(tmp_path / "x.pt")]):
        assert_one_error_line(cli(verb[0], unknown, *verb[1:]),
                              f"error: 404 job '{unknown}' not found")


def test_predict_with_an_ambiguous_or_unknown_start(cli, jobs, tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG not really")
    assert "starts 2 jobs" in assert_one_error_line(cli("predict", image, "--job",
                                                        jobs["shared"]))
    assert assert_one_error_line(cli("predict", image, "--job", "0" * 12)).startswith(
        "error: 404 ")


def test_an_upload_by_the_start_of_its_id(cli, http):
    shared, first, second = crafted_ids()
    upload_row(first, "prefix-cats")
    upload_row(second, "prefix-dogs")
    shown = cli("datasets", "show", first[:13])
    assert shown.exit_code == 0 and first in shown.stdout and "prefix-cats" in shown.stdout
    assert_one_error_line(cli("datasets", "show", shared),
                          f"error: dataset id '{shared}' starts 2 datasets: {second} "
                          f"(prefix-dogs), {first} (prefix-cats); give more of its digits")
    unknown = uuid.uuid4().hex[:12]
    assert_one_error_line(cli("datasets", "show", unknown),
                          f"error: 404 dataset '{unknown}' not found")
    # submit --dataset: the job is made on the whole id, and shown by the upload's name.
    run = cli("submit", "--model", "mlp", "--dataset", second[:13], "--name", "on-dogs")
    assert run.exit_code == 0, run.stderr
    assert "mlp on prefix-dogs (" in run.stderr
    job = http.get(f"/jobs/{run.lines[-1]}").json()
    assert job["dataset"] == second
    listed = cli("list", "--limit", "500")
    row = next(line for line in listed.lines if run.lines[-1] in line)
    assert "prefix-dogs" in row and second not in row
    shown = cli("show", run.lines[-1])
    assert f"prefix-dogs ({second})" in shown.stdout


def sweep_row(sweep_id: str, name: str) -> None:
    """An ended sweep of no trial (no scheduler takes a step of it)."""
    stored = check(SweepSpec.model_validate({
        "name": name, "base": {"model": "lenet", "dataset": "digits"}, "strategy": "grid",
        "space": {"hyperparameters.lr": {"grid": [0.1]}}}))[0].stored()
    with session_scope() as session:
        session.add(Sweep(id=sweep_id, name=name, status="cancelled", strategy="grid",
                          metric="eval_accuracy", mode="max", max_trials=1, max_concurrent=1,
                          seed=0, spec=stored))


def test_every_sweep_verb_takes_the_start_of_its_id(cli, http):
    shared, first, second = crafted_ids()
    sweep_row(first, "prefix-sweep-first")
    sweep_row(second, "prefix-sweep-second")
    assert [s["id"] for s in http.get("/sweeps", params={"id_prefix": shared.upper()})
            .json()["items"]] == [second, first]
    start = first[:13]
    shown = cli("sweep", "show", start)
    assert shown.exit_code == 0 and first in shown.stdout, shown.stderr
    assert "prefix-sweep-first" in shown.stdout
    assert json.loads(cli("sweep", "show", start, "--json").stdout)["id"] == first
    assert assert_one_error_line(cli("sweep", "best", start)).startswith(
        f"error: sweep {first} (cancelled): no trial has succeeded yet")
    assert first in assert_one_error_line(cli("sweep", "cancel", start))  # 409: it ended
    for verb in ("show", "best", "cancel", "delete"):
        assert_one_error_line(cli("sweep", verb, shared),
                              f"error: sweep id '{shared}' starts 2 sweeps: {second} "
                              f"(prefix-sweep-second), {first} (prefix-sweep-first); give "
                              "more of its digits")
        unknown = uuid.uuid4().hex[:12]
        assert assert_one_error_line(cli("sweep", verb, unknown)).startswith(
            "error: 404 "), verb
    deleted = cli("sweep", "delete", start)
    assert deleted.lines == [f"sweep {first} deleted, with its trial jobs"], deleted.stderr
    assert http.get(f"/sweeps/{first}").status_code == 404
    assert cli("sweep", "delete", second[:13]).exit_code == 0


def test_the_api_filters_by_id_prefix_and_refuses_anything_but_hex(http, jobs):
    listed = http.get("/jobs", params={"id_prefix": jobs["shared"].upper()}).json()["jobs"]
    assert [j["id"] for j in listed] == [jobs["queued"], jobs["done"]]
    assert [j["id"] for j in http.get("/jobs", params={
        "id_prefix": jobs["done"], "status": "succeeded"}).json()["jobs"]] == [jobs["done"]]
    none = http.get("/datasets", params={"id_prefix": jobs["shared"]}).json()["datasets"]
    assert none == []  # and no built-in: their ids are their names
    for path in ("/jobs", "/datasets", "/sweeps"):
        for bad in ("", "8c7g", "x" * 5, "a" * 33, "8c 7a", "8c%"):
            answer = http.get(path, params={"id_prefix": bad})
            assert answer.status_code == 422, (path, bad, answer.text)
            [problem] = answer.json()["detail"]
            assert problem["field"] == "id_prefix"
            assert problem["msg"] == "expected 1 to 32 hex digits (0-9, a-f): the start of an id"
