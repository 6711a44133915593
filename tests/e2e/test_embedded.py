"""Embedded mode as a new user runs it: `make run` (SQLite, filesystem broker, one worker),
the README's examples as written, its curl example, then Ctrl-C."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from contextlib import contextmanager

import httpx
import pytest

from cli.supervise import STOP_GRACE_SECONDS
from tests import readme_commands as readme
from tests.e2e.test_datasets import cifar_slice
from tests.e2e.test_distributed import ACCEPTANCE_JOB
from tests.procs import REPO, env_with, free_port, wait_http, wait_status, wait_until

pytestmark = pytest.mark.slow


@contextmanager
def running_make(tmp_path, data_dir=None, port: int | None = None, **settings: str):
    port = port or free_port()
    data_dir = data_dir or tmp_path / "data"
    # Nothing configured but the port and the data dir: every default is the embedded one.
    env = env_with(PORT=str(port), TRAINHUB_DATA_DIR=str(data_dir), TRAINHUB_DATABASE_URL=None,
                   TRAINHUB_BROKER_URL=None, TRAINHUB_REDIS_URL=None, **settings)
    log_path = tmp_path / f"make-run-{port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(["make", "run"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base, timeout=120)
        yield {"base": base, "proc": proc, "data_dir": data_dir, "log": log_path}
    finally:
        if proc.poll() is None:
            # SIGTERM first: `trainhub up` stops its API and worker, which run in sessions of
            # their own; a SIGKILL of make's group alone left them running (an orphaned API
            # still listening 40 minutes on, seen after a CI run).
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_SECONDS + 15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


# The README's blocks that a user runs in a second terminal beside `make run`, in order
# (a ### section, e.g. "Search hyperparameters", is part of the ## section above it).
# Not run: the quick start's own `make run` (the server here) and `make test` (this suite);
# "Many machines and GPUs": docker compose (test_compose_up.py brings up api and worker-cpu
# for real, not the GPU worker) and the block without containers, whose bucket
# (s3://my-bucket) the user brings, as the upload's archive (its parts: make services in
# tests/test_services_script.py, trainhub api and worker on Postgres and Redis in
# test_compose_commands.py, the S3 store in test_object_store.py); and the server verbs'
# synopsis, optional flags in brackets (the first block of "The command line").
README_BLOCKS = [("## API keys", None), ("## Train a model", None),
                 ("## Bring your own images", None), ("## The command line", 1)]


def _readme_commands() -> list[readme.Command]:
    found = readme.sections()
    chosen = []
    for heading, index in README_BLOCKS:
        blocks = found[heading]
        for block in (blocks if index is None else [blocks[index]]):
            chosen += readme.commands(block, heading)
    return chosen


def _port_8000_or_another() -> int:
    """The README's own port when it is free here (then nothing in a command is changed)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8000))
        except OSError:
            return free_port()
    return 8000


def test_the_readme_examples_run_as_written(tmp_path):
    """Every curl and CLI example of the README, in order, in a second terminal in the
    checkout (its examples/ beside, `. .venv/bin/activate` done), against `make run` with
    nothing configured: each exits 0 and answers the status it shows. The one file the
    README has the user bring, cifar10-jpg.tar.gz, is 400 images of the shared archive.
    Real processes: `make run` is the README's own command."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "examples", checkout / "examples")
    (checkout / "cifar10-jpg.tar.gz").write_bytes(cifar_slice(30, 10))
    port = _port_8000_or_another()
    user_env = {k: v for k, v in env_with(PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
                                          VIRTUAL_ENV=str(REPO / ".venv")).items()
                if not k.startswith("TRAINHUB_")}
    if port != 8000:  # the CLI's default URL is :8000; curl's lines are rewritten to the port
        user_env["TRAINHUB_URL"] = f"http://127.0.0.1:{port}"
    commands = _readme_commands()
    assert len(commands) >= 30 and any(c.text.startswith("trainhub predict") for c in commands)
    variables: dict[str, str] = {}
    ran: dict[str, readme.Ran] = {}
    with running_make(tmp_path, data_dir=checkout / "data", port=port,
                      TRAINHUB_AUTH="on") as make_run:
        for command in commands:
            if command.text.startswith("tensorboard "):
                _check_tensorboard(command, checkout, user_env, variables["JOB"])
                continue
            result = readme.run(command, checkout, user_env, variables, port)
            assert result.problem() is None, (
                f"{command.section}: {command.text}\n-> {result.problem()}\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
            if command.assigns:
                variables[command.assigns] = result.value
            ran[command.text.split("#")[0].strip()] = result
            if "/datasets/$DATASET " in command.text:  # the README: "then ready"
                _wait_until_ready(make_run["base"], variables)
    predicted = json.loads(next(r.stdout for text, r in ran.items()
                                if text.startswith("curl") and "/predict" in text))
    assert [p[0]["label"] for p in predicted["predictions"]] == ["7", "3"], predicted
    assert "loss:" in next(r.stdout for text, r in ran.items() if "--follow" in text)


def _wait_until_ready(base: str, variables: dict[str, str]) -> None:
    headers = {"Authorization": variables["AUTH"].split(": ", 1)[1]}
    wait_until(lambda: httpx.get(f"{base}/datasets/{variables['DATASET']}", headers=headers)
               .json()["status"] == "ready", timeout=300)


def _check_tensorboard(command: readme.Command, cwd, env, job_id: str) -> None:
    """`tensorboard --logdir data/tensorboard` serves (on 6006, as written) the job's run."""
    proc = subprocess.Popen(["bash", "-c", command.text], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        runs = wait_until(lambda: _tensorboard_runs(), timeout=120)
        assert any(run.endswith(job_id[:8]) for run in runs), runs
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _tensorboard_runs():
    try:
        return httpx.get("http://localhost:6006/data/runs", timeout=5).json() or None
    except (httpx.HTTPError, ValueError):
        time.sleep(0.5)
        return None


def test_make_run_trains_the_readme_job_and_stops_on_ctrl_c(tmp_path):
    # Authentication on, as a user gets it: `make run` made the admin key before /health
    # answered, and the CLI on this machine finds it by itself.
    with running_make(tmp_path, TRAINHUB_AUTH="on") as make_run:
        _readme_job_then_ctrl_c(make_run)


def _readme_job_then_ctrl_c(make_run):
    base, data_dir = make_run["base"], make_run["data_dir"]
    health = httpx.get(f"{base}/health").json()
    assert health == {"status": "ok", "database": "ok", "broker": "ok"}
    key_file = data_dir / "admin.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert httpx.get(f"{base}/jobs").status_code == 401
    auth = {"Authorization": f"Bearer {key}"}

    resp = httpx.post(f"{base}/jobs", json=ACCEPTANCE_JOB, headers=auth)
    assert resp.status_code == 201, resp.text
    job = wait_status(base, resp.json()["id"], timeout=240, key=key)
    assert job["status"] == "succeeded", job
    assert job["metrics"]["eval_accuracy"] >= 0.90
    listed = subprocess.run([str(REPO / ".venv" / "bin" / "trainhub"), "list", "--url", base],
                            env=env_with(TRAINHUB_DATA_DIR=str(data_dir),
                                         TRAINHUB_API_KEY=None),
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and job["id"] in listed.stdout, listed.stderr

    points = httpx.get(f"{base}/jobs/{job['id']}/metrics", params={"name": "loss"},
                       headers=auth).json()["metrics"]
    batches_per_epoch = job["progress"]["total_steps"] // 3
    assert len(points) == 3 * (batches_per_epoch // 100)
    assert [p["step"] for p in points] == sorted(p["step"] for p in points)
    # Embedded defaults: everything under the data dir.
    assert (data_dir / "trainhub.db").exists() and (data_dir / "broker").is_dir()
    with sqlite3.connect(data_dir / "trainhub.db") as conn:
        (count,) = conn.execute("SELECT count(*) FROM metric_points WHERE job_id = ?",
                                (job["id"],)).fetchone()
    assert count == len(points) + 3 * 6  # loss points + six per-epoch metrics

    # Ctrl-C in the terminal: the whole foreground group gets SIGINT; both processes stop.
    proc = make_run["proc"]
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)  # stops, rather than waiting for anything to finish
    log = make_run["log"].read_text(errors="replace")
    assert "stopping API and worker" in log
    assert f"API key in {key_file}" in log and key not in log  # where it is, never the key
    assert "[1,   100] loss:" in log  # the tutorial's progress lines reach the terminal
    # ...with the job's state changes and the requests that changed something, but not what
    # buried them: alembic's setup, kombu's host warning, the polls of GET /jobs/{id}
    # (wait_status sent dozens), an ERROR for a clean stop, a job id twice on a line.
    assert "database schema upgraded from an empty database to " in log
    assert f"job={job['id']}: attempt 1 claimed by " in log
    assert f"job={job['id']}: succeeded" in log and f"job={job['id']}: job " not in log
    assert '"POST /jobs HTTP/1.1" 201' in log and '"GET /jobs/' not in log
    assert "setup plugin" not in log and "No hostname was supplied" not in log
    assert not [line for line in log.splitlines() if "ERROR" in line], log[-3000:]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/health", timeout=2)


def test_ctrl_c_during_a_job_hands_it_back_and_the_next_make_run_resumes_it(tmp_path):
    """Ctrl-C mid-epoch: the job goes back to queued with a resume checkpoint; the next
    `make run` on the same data dir continues it from that step."""
    job = {"model": "lenet", "dataset": "digits",
           "hyperparameters": {"epochs": 2, "batch_size": 1, "log_every": 50}}
    # Resend a handed-back job 1 s after it was requeued, rather than the default 30 s.
    with running_make(tmp_path, TRAINHUB_ENQUEUE_GRACE_SECONDS="1") as first:
        job_id = httpx.post(f"{first['base']}/jobs", json=job).json()["id"]
        wait_until(lambda: httpx.get(f"{first['base']}/jobs/{job_id}").json()["progress"]
                   ["step"] >= 500, timeout=180)
        os.killpg(first["proc"].pid, signal.SIGINT)
        first["proc"].wait(timeout=60)
    with sqlite3.connect(tmp_path / "data" / "trainhub.db") as conn:
        status, step = conn.execute("SELECT status, step FROM jobs WHERE id = ?",
                                    (job_id,)).fetchone()
    assert status == "queued" and 500 <= step < 1437  # handed back mid-epoch

    with running_make(tmp_path, TRAINHUB_ENQUEUE_GRACE_SECONDS="1") as second:
        final = wait_status(second["base"], job_id, timeout=240)
    assert final["status"] == "succeeded", final
    assert final["resumed_from"]["step"] == step and final["attempts"] == 2
