"""`trainhub sweep submit|list|show|cancel|best|delete`: a sweep file's errors (before any
request), the API's 422 and 404 as the other verbs show them, a sweep whose trials stay queued
(the package's API has no worker) listed, shown, cancelled and deleted; and, with a real worker,
`sweep submit --follow` to the end (through a pipe: a line per change; on a pseudo-terminal: one
table redrawn) and `sweep best`'s job id."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.e2e.conftest import running_stack
from tests.integration.cli.conftest import assert_one_error_line, invoke
from tests.procs import REPO, env_with, free_port

BASE = {"model": "lenet", "dataset": "digits",
        "hyperparameters": {"epochs": 1, "batch_size": 64}}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ROW = re.compile(r"^trial=(\d+) job=([0-9a-f]{8}) status=(\w+) lr=(\S+) eval_accuracy=(\S+) "
                 r"epochs=(\d+)/1$")


def sweep_body(**fields) -> dict:
    return {"base": BASE, "space": {"hyperparameters.lr": {"grid": [0.05, 0.1]}},
            "strategy": "grid", **fields}


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- the file: each problem is one error line naming it, and nothing is sent ------------

def test_a_bad_sweep_file_is_one_error_line_naming_it(tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"  # never asked: the file is read first
    missing = tmp_path / "missing.yaml"
    assert_one_error_line(invoke("sweep", "submit", missing, "--url", nowhere),
                          f"error: cannot read {missing}: No such file or directory")
    broken = write(tmp_path, "broken.yaml", "base: {model: lenet\nspace: [\n")
    line = assert_one_error_line(invoke("sweep", "submit", broken, "--url", nowhere))
    assert line.startswith(f"error: {broken} (line ") and "column" in line, line
    listed = write(tmp_path, "listed.json", json.dumps([sweep_body()]))
    line = assert_one_error_line(invoke("sweep", "submit", listed, "--url", nowhere))
    assert line == (f"error: {listed}: expected a mapping of sweep fields (base, space, "
                    "strategy, metric, ...), got a list"), line
    empty = write(tmp_path, "empty.yaml", "")
    assert_one_error_line(invoke("sweep", "submit", empty, "--url", nowhere),
                          f"error: {empty}: empty; expected a sweep (base, space, strategy, "
                          "metric, ...)")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert_one_error_line(invoke("sweep", "submit", binary, "--url", nowhere),
                          f"error: {binary} is not a text file")


# ---- against the package's API (no worker: trials stay queued) ---------------------------

def test_the_api_s_422_and_404_are_shown_as_the_other_verbs_show_them(cli, tmp_path):
    bad = write(tmp_path, "bad.yaml", yaml.safe_dump(sweep_body(max_trials=0)))
    line = assert_one_error_line(cli("sweep", "submit", bad))
    assert line.startswith("error: 422 max_trials: "), line
    bad_space = write(tmp_path, "space.yaml", yaml.safe_dump(
        sweep_body(space={"hyperparameters.nope": {"grid": [1, 2]}})))
    line = assert_one_error_line(cli("sweep", "submit", bad_space))
    assert line.startswith("error: 422 space.hyperparameters.nope: "), line
    missing = "0" * 32
    for verb in ("show", "best", "cancel", "delete"):
        line = assert_one_error_line(cli("sweep", verb, missing))
        assert line.startswith("error: 404 ") and missing in line, (verb, line)


def test_a_queued_sweep_listed_shown_without_a_best_cancelled_and_deleted(cli, http, tmp_path):
    body = write(tmp_path, "sweep.json", json.dumps(sweep_body(name="cli-queued")))
    run = cli("sweep", "submit", body)
    assert run.exit_code == 0, run.stderr
    sweep_id = run.lines[-1]
    assert re.fullmatch(r"[0-9a-f]{32}", sweep_id)
    assert run.stderr.startswith("submitted sweep cli-queued: grid over lr, max eval_accuracy")
    [trial] = http.get("/jobs", params={"sweep": sweep_id}).json()["jobs"]  # 1 at a time

    listed = cli("sweep", "list", "--json")
    assert sweep_id in [s["id"] for s in json.loads(listed.stdout)]
    table = cli("sweep", "list").stdout
    assert any(line.startswith(sweep_id) and "cli-queued" in line and "running" in line
               for line in table.splitlines()), table

    shown = cli("sweep", "show", sweep_id)
    assert shown.exit_code == 0, shown.stderr
    assert "1 of at most 2 created (1 queued)" in shown.stdout
    assert "no trial has succeeded yet" in shown.stdout
    [row] = [[c for c in line.split() if c != "│"] for line in shown.lines
             if trial["id"][:8] in line]
    assert row == ["0", trial["id"][:8], "queued", "0.05", "-", "0/1"]
    assert json.loads(cli("sweep", "show", sweep_id, "--json").stdout)["id"] == sweep_id

    line = assert_one_error_line(cli("sweep", "best", sweep_id))
    assert line == (f"error: sweep {sweep_id} (running): no trial has succeeded yet; 1 of at "
                    "most 2 created (1 queued)")
    line = assert_one_error_line(cli("sweep", "delete", sweep_id))
    assert line.startswith("error: 409 ") and "running" in line, line

    cancelled = cli("sweep", "cancel", sweep_id)
    assert cancelled.exit_code == 0, cancelled.stderr
    assert cancelled.lines == [f"sweep {sweep_id} cancelled: 1 of at most 2 created "
                               "(1 cancelled)"]
    assert http.get(f"/jobs/{trial['id']}").json()["status"] == "cancelled"
    deleted = cli("sweep", "delete", sweep_id)
    assert deleted.lines == [f"sweep {sweep_id} deleted, with its trial jobs"]
    assert http.get(f"/sweeps/{sweep_id}").status_code == 404
    assert http.get(f"/jobs/{trial['id']}").status_code == 404


# ---- with a worker: a sweep followed to its end --------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # Real processes: the trials must be trained by a worker and the sweep advanced as they end.
    with running_stack(tmp_path_factory.mktemp("sweeps"), "w-sweeps@test") as running:
        yield running


@pytest.mark.slow
def test_submit_follow_shows_every_trial_and_best_names_a_job_the_api_knows(trained, tmp_path):
    # Slow: a worker trains both trials, and the sweep ends only when they have (~10 s).
    base = trained["base"]
    body = write(tmp_path, "sweep.yaml", yaml.safe_dump(sweep_body(name="cli-follow")))

    def trainhub(*args: str) -> subprocess.CompletedProcess:  # a pipe: no TTY, no escapes
        return subprocess.run([sys.executable, "-m", "cli", *args, "--url", base], cwd=REPO,
                              env=env_with(TRAINHUB_URL=None), capture_output=True, text=True,
                              timeout=300)

    run = trainhub("sweep", "submit", str(body), "--follow")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "\x1b" not in run.stdout
    lines = run.stdout.splitlines()
    sweep_id = lines[0]
    assert lines[1].startswith(f"following sweep {sweep_id} (cli-follow): grid over lr")
    rows = [ROW.match(line).groups() for line in lines[2:-1] if line.startswith("trial=")]
    final = {trial: row for trial, *row in rows}  # a trial's last line
    assert sorted(final) == ["0", "1"]
    assert [final[t][1:3] for t in ("0", "1")] == [["succeeded", "0.05"], ["succeeded", "0.1"]]
    assert all(float(final[t][3]) > 0 for t in final)

    sweep = httpx.get(f"{base}/sweeps/{sweep_id}").json()
    assert sweep["status"] == "succeeded" and sweep["trials"]["succeeded"] == 2
    best = sweep["best"]
    assert lines[-1].startswith(f"sweep {sweep_id} succeeded: best trial {best['trial']} "
                                f"(job {best['job_id']}")
    assert lines[-1].endswith(f": eval_accuracy={best['value']:.4f} "
                              f"lr={best['values']['hyperparameters.lr']:.4g}")
    jobs = httpx.get(f"{base}/jobs", params={"sweep": sweep_id}).json()["jobs"]
    assert sorted(j["id"][:8] for j in jobs) == sorted(row[0] for row in final.values())

    best_run = trainhub("sweep", "best", sweep_id)
    assert best_run.returncode == 0, best_run.stderr
    job_id = best_run.stdout.splitlines()[-1]
    job = httpx.get(f"{base}/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["sweep"]["id"] == sweep_id
    assert job["name"] == f"cli-follow-t{best['trial']}"


@pytest.mark.slow
def test_submit_follow_on_a_terminal_redraws_one_table(trained, tmp_path):
    # Slow: the redraws happen only while a worker moves real trials on (~10 s).
    body = write(tmp_path, "tty.yaml", yaml.safe_dump(sweep_body(name="cli-tty")))
    main, side = pty.openpty()  # stdout a terminal: the table is redrawn in place
    proc = subprocess.Popen([sys.executable, "-m", "cli", "sweep", "submit", str(body),
                             "--follow", "--url", trained["base"]], cwd=REPO,
                            env=env_with(TRAINHUB_URL=None, TERM="xterm", COLUMNS="120"),
                            stdin=subprocess.DEVNULL, stdout=side, stderr=subprocess.PIPE)
    os.close(side)
    received, deadline = b"", time.monotonic() + 300
    while select.select([main], [], [], max(0.0, deadline - time.monotonic()))[0]:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(main)
    assert proc.wait(timeout=30) == 0, (received, proc.stderr.read())
    text = received.decode().replace("\r", "")
    sweep_id = text.splitlines()[0]
    assert "\x1b[1A" in text  # the cursor went back up: the table was redrawn in place
    last_frame = [ANSI.sub("", line) for line in text.rpartition("\x1b[1A")[2].splitlines()]
    rows = [[c for c in line.split() if c != "│"] for line in last_frame]
    table = {row[0]: row[2:4] for row in rows if row and row[0] in ("0", "1")}
    assert table == {"0": ["succeeded", "0.05"], "1": ["succeeded", "0.1"]}, text
    assert last_frame[-1].startswith(f"sweep {sweep_id} succeeded: best trial "), text
