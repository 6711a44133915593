"""The commands docker-compose.yml runs, run natively (no Docker engine here) against the
local Postgres and Redis with the compose file's own TRAINHUB_* settings."""
from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import uuid

import httpx
import pytest
import yaml

from tests.conftest import BROKER_DB, EVENTS_DB, REDIS_BASE, create_database
from tests.procs import REPO, Proc, env_with, free_port, wait_http, wait_status

pytestmark = pytest.mark.slow


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default}, with this environment empty of those variables."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), value)


def native_env(tmp_path) -> dict[str, str]:
    """The compose environment with the service hosts pointed at this machine."""
    env = {k: interpolate(str(v)) for k, v in compose()["x-trainhub-env"].items()}
    assert set(env) >= {"TRAINHUB_DATABASE_URL", "TRAINHUB_BROKER_URL", "TRAINHUB_REDIS_URL"}
    env["TRAINHUB_DATABASE_URL"] = create_database("trainhub_compose")
    env["TRAINHUB_BROKER_URL"] = f"{REDIS_BASE}/{BROKER_DB}"
    env["TRAINHUB_REDIS_URL"] = f"{REDIS_BASE}/{EVENTS_DB}"
    env["TRAINHUB_DATA_DIR"] = str(tmp_path / "data")
    env["TRAINHUB_DATASET_ROOT"] = str(tmp_path / "data" / "datasets")
    env["TRAINHUB_ALLOW_DOWNLOAD"] = "false"
    env["TRAINHUB_QUEUE"] = f"compose-{uuid.uuid4().hex[:8]}"  # isolation from other tests
    # The compose file's own value (authentication on unless it says otherwise), not the
    # test suite's default of off: the API listens on 0.0.0.0 there.
    env["TRAINHUB_AUTH"] = env.get("TRAINHUB_AUTH", "on")
    return env_with(**env)


def trainhub_args(service: dict, port: int | None = None) -> list[str]:
    argv = shlex.split(service["command"]) if isinstance(service["command"], str) \
        else list(service["command"])
    assert argv[0] == "trainhub"
    if port is not None:  # 8000 may be taken on this machine
        argv[argv.index("--port") + 1] = str(port)
    return argv[1:]


def test_migrate_api_and_worker_as_compose_runs_them(tmp_path):
    services = compose()["services"]
    env = native_env(tmp_path)
    migrate = subprocess.run([sys.executable, "-m", "cli", *trainhub_args(services["migrate"])],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    assert "schema is up to date" in migrate.stderr

    port = free_port()
    api = Proc(trainhub_args(services["api"], port), env, tmp_path / "api.log")
    worker = Proc(trainhub_args(services["worker"]), env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base, api)
        worker.wait_for_log(" ready.")
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
        # The API made the first admin key in its data dir (the compose volume).
        key = (tmp_path / "data" / "admin.key").read_text().strip()
        assert httpx.get(f"{base}/jobs").status_code == 401
        job = httpx.post(f"{base}/jobs", json={"model": "mlp", "dataset": "digits",
                                               "hyperparameters": {"epochs": 1,
                                                                   "batch_size": 32,
                                                                   "log_every": 10}},
                         headers={"Authorization": f"Bearer {key}"}).json()
        assert wait_status(base, job["id"], key=key)["status"] == "succeeded"
        # The worker's compose healthcheck: a broker ping to its own node name.
        check = services["worker"]["healthcheck"]["test"][1]
        check = check.replace("$$HOSTNAME", socket.gethostname()).replace(" > /dev/null", "")
        argv = shlex.split(check)
        assert argv[0] == "celery"
        ping = subprocess.run([sys.executable, "-m", "celery", *argv[1:]], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
        # The API's healthcheck, pointed at the port the test gave it.
        api_check = services["api"]["healthcheck"]["test"]
        code = api_check[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0
    finally:
        api.stop()
        worker.stop()
