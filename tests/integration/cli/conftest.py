"""The `trainhub` client verbs in-process (typer's CliRunner) against a real API process on
the test Postgres; no worker consumes its queue, so submitted jobs stay queued."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from core.db import upgrade_schema
from tests.procs import env_with, start_api


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def invoke(*args: str, env: dict[str, str] | None = None) -> Run:
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a bug in the CLI: let the test show it
    return Run(result.exit_code, result.stdout, result.stderr)


def assert_one_error_line(run: Run, expected: str | None = None) -> str:
    """A failed command: exit code 1 and exactly one `error: ...` line on stderr."""
    assert run.exit_code == 1, (run.exit_code, run.stdout, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    if expected is not None:
        assert lines[0] == expected
    return lines[0]


@pytest.fixture(scope="package")
def api_url(tmp_path_factory):
    """An API on the test database this process also reads and writes (tests add metric
    points and finish jobs directly), with a queue no worker consumes."""
    tmp = tmp_path_factory.mktemp("cli-api")
    env = env_with(TRAINHUB_DATA_DIR=str(tmp / "data"),
                   TRAINHUB_QUEUE=f"idle-cli-{uuid.uuid4().hex[:8]}")
    proc, base = start_api(env, tmp)
    upgrade_schema()
    yield base
    proc.stop()


@pytest.fixture
def cli(api_url):
    """invoke() with --url pointing at the test API."""
    def run(*args: str) -> Run:
        return invoke(*args, "--url", api_url)
    return run


@pytest.fixture
def http(api_url):
    with httpx.Client(base_url=api_url, timeout=30) as client:
        yield client


def tutorial_points(epochs: int = 2, batches: int = 90, log_every: int = 20) -> list[dict]:
    """What a worker writes for mlp on digits with batch 16: loss points every log_every
    mini-batches, then each epoch's evaluation at its last step."""
    points = []
    for epoch in range(1, epochs + 1):
        for batch in range(log_every, batches + 1, log_every):
            points.append({"name": "loss", "epoch": epoch, "batch": batch,
                           "step": (epoch - 1) * batches + batch,
                           "value": 2.5 / (epoch * 10 + batch / log_every)})
        step = epoch * batches
        for name, value in (("train_loss", 1.0 / epoch), ("eval_loss", 0.9 / epoch),
                            ("eval_accuracy", 0.8 + epoch / 100)):
            points.append({"name": name, "epoch": epoch, "batch": batches, "step": step,
                           "value": value})
    return points


def finish_job(job_id: str, points: list[dict], status: str = "succeeded",
               error: str | None = None) -> None:
    """Play the worker's part in this process: claim the job, store its points, end it."""
    from core import jobs
    from core.db import session_scope
    from core.metrics import store as metric_store
    from core.states import JobStatus

    last = max((p["step"] for p in points), default=0)
    final = {p["name"]: p["value"] for p in points if p["step"] == last and p["name"] != "loss"}
    with session_scope() as session:
        jobs.claim(session, job_id, "standin@test", "cpu", lease_seconds=60)
        metric_store.insert_metrics(session, job_id, points)
        jobs.transition(session, job_id, JobStatus(status), error=error,
                        final_metrics=final if status == "succeeded" else None,
                        epoch=max((p["epoch"] for p in points), default=0), step=last)
