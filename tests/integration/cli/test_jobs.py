"""`trainhub list`, `show`, `cancel`, `metrics`, `checkpoints`, `download`, `predict`
against the real API: tables, CSV and JSON, and every error as one line."""
from __future__ import annotations

import csv
import io
import json

import pytest

from cli import metrics as metrics_verb
from tests.integration.cli.conftest import (assert_one_error_line, finish_job, invoke,
                                            tutorial_points)
from tests.procs import free_port


def new_job(cli, *flags: str) -> str:
    run = cli("submit", "--model", "mlp", "--dataset", "digits", "--batch-size", "16",
              "--log-every", "20", *flags)
    assert run.exit_code == 0, run.stderr
    return run.lines[-1]


def test_list_shows_jobs_newest_first_filtered_by_status(cli):
    first, second = new_job(cli, "--name", "list-a"), new_job(cli, "--name", "list-b")
    run = cli("list", "--status", "queued", "--limit", "500")
    assert run.exit_code == 0, run.stderr
    assert run.stdout.index(second) < run.stdout.index(first)
    assert "list-a" in run.stdout and "queued" in run.stdout
    assert "step 0/180" in run.stdout  # 1437 // 16 + 1 = 90 batches per epoch, 2 epochs
    only = cli("list", "--status", "queued", "--limit", "1")
    assert second in only.stdout and first not in only.stdout
    assert "--limit 2" in only.stderr  # there are more


def test_list_refuses_an_unknown_status_in_one_line(cli):
    assert assert_one_error_line(cli("list", "--status", "bogus")).startswith("error: 422 status: ")


def test_show_prints_status_progress_spec_metrics_and_error(cli):
    job_id = new_job(cli, "--name", "shown")
    finish_job(job_id, tutorial_points(epochs=1), status="failed", error="out of memory")
    run = cli("show", job_id)
    assert run.exit_code == 0, run.stderr
    out = run.stdout
    for needle in (job_id, "shown", "failed", "epoch 1/2, step 90/180 (50%)", "standin@test",
                   'model="mlp"', "batch_size=16", "log_every=20", "out of memory"):
        assert needle in out, (needle, out)
    as_json = json.loads(cli("show", job_id, "--json").stdout)
    assert as_json["id"] == job_id and as_json["error"] == "out of memory"


def test_show_and_cancel_of_an_unknown_job_are_404_lines(cli):
    assert_one_error_line(cli("show", "f" * 32), f"error: 404 job '{'f' * 32}' not found")
    assert_one_error_line(cli("cancel", "nope"), "error: 404 job 'nope' not found")


def test_cancel_a_queued_job_then_again(cli):
    job_id = new_job(cli)
    run = cli("cancel", job_id)
    assert run.exit_code == 0 and run.lines == [f"job {job_id} cancelled"]
    assert assert_one_error_line(cli("cancel", job_id)).startswith("error: 409 ")


def test_metrics_csv_follows_every_page(cli, monkeypatch):
    monkeypatch.setattr(metrics_verb, "PAGE", 5)  # 14 points: 3 or more pages
    job_id = new_job(cli)
    points = tutorial_points()
    points[0]["value"] = float("nan")  # a diverged value is stored and shown as null
    finish_job(job_id, points)
    run = cli("metrics", job_id, "--csv")
    assert run.exit_code == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert run.lines[0] == "name,epoch,batch,step,value,time"
    assert len(rows) == len(points) == 14
    assert [int(r["step"]) for r in rows] == sorted(int(r["step"]) for r in rows)
    assert rows[0]["value"] == ""  # null
    got = {(r["name"], int(r["step"])): float(r["value"]) for r in rows[1:]}
    want = {(p["name"], p["step"]): p["value"] for p in points[1:]}
    assert got == pytest.approx(want)
    assert all(r["time"] for r in rows)


def test_metrics_by_name_as_json_and_as_a_table(cli):
    job_id = new_job(cli)
    finish_job(job_id, tutorial_points())
    points = json.loads(cli("metrics", job_id, "--name", "eval_accuracy", "--json").stdout)
    assert [(p["epoch"], p["value"]) for p in points] == [(1, 0.81), (2, pytest.approx(0.82))]
    table = cli("metrics", job_id, "--name", "loss").stdout
    assert table.count("loss") >= 8 and "eval_accuracy" not in table
    assert_one_error_line(cli("metrics", job_id, "--csv", "--json"),
                          "error: --csv and --json: choose one")
    assert assert_one_error_line(cli("metrics", job_id, "--name", "bogus")).startswith(
        "error: 422 name: ")


def test_a_job_without_checkpoints(cli, tmp_path):
    job_id = new_job(cli)
    run = cli("checkpoints", job_id)
    assert run.exit_code == 0 and "no checkpoint yet" in run.stdout
    target = tmp_path / "model.pt"
    assert assert_one_error_line(cli("download", job_id, "-o", str(target))).startswith(
        "error: 404 ")
    assert not target.exists() and not list(tmp_path.iterdir())
    image = tmp_path / "seven.png"
    image.write_bytes(b"\x89PNG not really")
    assert assert_one_error_line(cli("predict", str(image), "--job", job_id)).startswith(
        "error: 409 ")
    assert_one_error_line(cli("predict", str(tmp_path / "none.png"), "--job", job_id),
                          f"error: cannot read {tmp_path / 'none.png'}: No such file or "
                          "directory")
    assert "expected best, latest or an epoch" in assert_one_error_line(
        cli("download", job_id, "--checkpoint", "../etc"))


def test_an_unreachable_api_is_one_line_for_every_verb(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["list"], ["show", "x"], ["submit", "--model", "mlp", "--dataset", "digits"],
                 ["follow", "x"], ["metrics", "x", "--csv"], ["datasets", "list"],
                 ["cancel", "x"], ["checkpoints", "x"], ["download", "x", "-o",
                                                         str(tmp_path / "x.pt")]):
        assert_one_error_line(invoke(*args, "--url", url),
                              f"error: cannot reach {url}: connection refused")


def test_the_url_comes_from_trainhub_url_and_may_omit_the_scheme(api_url):
    run = invoke("list", "--limit", "1", env={"TRAINHUB_URL": api_url})
    assert run.exit_code == 0, run.stderr
    bare = api_url.removeprefix("http://")
    assert invoke("datasets", "list", "--url", bare).exit_code == 0


def header(table_text: str) -> list[str]:
    return [cell.strip() for cell in table_text.splitlines()[0].split("┃")]


def test_the_checkpoints_table_labels_every_column(cli):
    from core.db import session_scope
    from core.tables import Checkpoint

    job_id = new_job(cli)
    finish_job(job_id, tutorial_points())
    with session_scope() as session:
        for epoch in (1, 2):
            session.add(Checkpoint(job_id=job_id, epoch=epoch, step=90 * epoch,
                                   storage_key=f"jobs/{job_id}/e{epoch}.pt", size_bytes=1000,
                                   sha256=f"{epoch}" * 64,
                                   metrics={"eval_accuracy": 0.8 + epoch / 100}))
    run = cli("checkpoints", job_id)
    assert run.exit_code == 0, run.stderr
    assert header(run.stdout) == ["epoch", "tags", "step", "eval_accuracy", "metrics", "size",
                                  "sha256", "created"]
    rows = [[cell.strip() for cell in line.split("│")] for line in run.lines[2:]]
    assert [row[:3] for row in rows] == [["2", "latest,best", "180"], ["1", "", "90"]]


def test_list_prints_ids_whole_in_a_narrow_terminal(cli, api_url):
    job_id = new_job(cli, "--name", "a-long-name-" + "x" * 40)
    for columns in ("120", "80"):
        run = invoke("list", "--limit", "3", "--url", api_url, env={"COLUMNS": columns})
        assert run.exit_code == 0, run.stderr
        assert max(map(len, run.lines)) <= int(columns)
        assert job_id in run.stdout, run.stdout  # on one line, not folded over two
