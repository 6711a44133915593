"""`docker compose up` for real (issue #11): the images built, the stack brought up with two
`worker-cpu` replicas, jobs submitted through the published port and shared by both workers,
a checkpoint downloaded, `/predict` answered, then `docker compose down -v`.

No image can be pulled here: tests/compose/setup.sh installs Debian's dockerd, a Compose v2
binary (pinned, hash-checked) and builds stand-ins for postgres:16, redis:7 and
python:3.11-slim-bookworm from a debootstrapped Debian. The test starts dockerd when none
answers and stops the one it started; if dockerd cannot start, the test fails with the
reason (it does not skip). Cold (nothing installed): about 6 minutes and ~3.5 GB of
downloads, mostly torch and the CUDA wheels in the image; warm (the images kept in dockerd's
/var/lib/docker, the rest in ~/.cache/trainhub-compose-test): under 2 minutes, most of it
waiting for the workers' first healthcheck (every 60 s).
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.procs import REPO, TERMINAL, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SETUP = REPO / "tests" / "compose" / "setup.sh"
PROJECT = "trainhub-composetest"  # not `trainhub`: a user's own stack on this host stays apart
IMAGE = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["api"]["image"]
WORKERS = 2
JOB = {"model": "mlp", "dataset": "digits", "device": "cpu",
       "hyperparameters": {"epochs": 3, "batch_size": 16, "optimizer": "adam", "lr": 0.003,
                           "log_every": 20}}
N_JOBS = 6


class Progress:
    """Each phase with its duration, printed past pytest's capture (a long test: the CI log
    shows where the time went even when it passes)."""

    def __init__(self, capsys):
        self.capsys = capsys
        self.start = time.monotonic()

    def say(self, message: str) -> None:
        with self.capsys.disabled():
            print(f"[compose-test {time.monotonic() - self.start:6.1f}s] {message}", flush=True)

    @contextmanager
    def phase(self, name: str):
        self.say(f"{name} ...")
        began = time.monotonic()
        yield
        self.say(f"{name}: done in {time.monotonic() - began:.1f}s")


def run(argv: list[str], *, timeout: float, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"`{' '.join(argv)}` exited {proc.returncode}:\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def dockerd(progress: Progress, log_path: Path):
    """A dockerd that answers: the one already running, or one started here and stopped at
    the end. A dockerd that cannot start fails the test with its log."""
    if docker_answers():
        progress.say("dockerd: already running, using it (it is left running)")
        yield
        return
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed (tests/compose/setup.sh packages failed?)")
    log = open(log_path, "wb")
    proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not docker_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                why = (f"exited {proc.returncode}" if proc.poll() is not None
                       else "did not answer in 90s")
                pytest.fail(f"dockerd could not start ({why}):\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        progress.say(f"dockerd: started (pid {proc.pid}, log {log_path})")
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        progress.say(f"dockerd: stopped (exit {proc.returncode})")


def image_id(tag: str, env: dict[str, str]) -> str | None:
    proc = run(["docker", "image", "inspect", "-f", "{{.Id}}", tag], timeout=60, env=env,
               check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


@contextmanager
def one_run_at_a_time(progress: Progress):
    """Two runs on one machine (two checkouts' test suites) would share dockerd, the project
    name and the image tag: one's `down -v` or dockerd stop would break the other's stack."""
    cache = Path(os.environ.get("TRAINHUB_COMPOSE_CACHE",
                                Path.home() / ".cache" / "trainhub-compose-test"))
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.say(f"waiting for another run of this test ({cache / 'lock'})")
            began = time.monotonic()
            fcntl.flock(lock, fcntl.LOCK_EX)
            progress.say(f"lock taken after {time.monotonic() - began:.0f}s")
        yield


def compose_env() -> dict[str, str]:
    """This environment without the settings that Compose would interpolate into the file
    (the test suite sets TRAINHUB_AUTH=off and others for its own processes)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRAINHUB_", "POSTGRES_", "COMPOSE_"))}
    # The classic builder: BuildKit would fetch the `# syntax=` frontend from a registry.
    env["DOCKER_BUILDKIT"] = "0"
    return env


def digit_pngs(count: int) -> tuple[list[bytes], list[int]]:
    from worker.data import digits_split

    _, x_test, _, y_test = digits_split()
    images = []
    for x in x_test[:count]:
        buf = io.BytesIO()
        Image.fromarray(np.rint(x * (255 / 16)).astype(np.uint8), "L").save(buf, format="PNG")
        images.append(buf.getvalue())
    return images, [int(y) for y in y_test[:count]]


def wait_for(what: str, predicate, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached in {timeout:.0f}s")
        time.sleep(interval)


def test_compose_up_two_cpu_workers_share_jobs(tmp_path, capsys):
    progress = Progress(capsys)
    with one_run_at_a_time(progress):
        compose_up_and_use(progress, tmp_path)
    progress.say("done")


def compose_up_and_use(progress: Progress, tmp_path: Path) -> None:
    env = compose_env()
    with progress.phase("setup: packages (docker.io, debootstrap)"):
        run(["bash", str(SETUP), "packages"], timeout=900, env=env)
    with progress.phase("setup: Compose v2"):
        binary = run(["bash", str(SETUP), "compose"], timeout=300, env=env).stdout.strip()
    with dockerd(progress, tmp_path / "dockerd.log"):
        with progress.phase("setup: stand-in base images"):
            run(["bash", str(SETUP), "images"], timeout=900, env=env)
        port = free_port()
        override = tmp_path / "compose.override.yml"
        # Only the published port differs from the real file (8000 may be taken here).
        override.write_text("services:\n  api:\n    ports: !override\n"
                            f'      - "127.0.0.1:{port}:8000"\n')
        compose = [binary, "-p", PROJECT, "-f", str(REPO / "docker-compose.yml"),
                   "-f", str(override), "--profile", "cpu"]
        progress.say(f"compose: {binary} -p {PROJECT}, API on 127.0.0.1:{port}")
        run([*compose, "down", "-v", "--remove-orphans"], timeout=300, env=env)  # a leftover
        try:
            with progress.phase("compose build (Dockerfile.gpu)"):
                before = image_id(IMAGE, env)
                run([*compose, "build", "api"], timeout=1500, env=env)
                if before and before != image_id(IMAGE, env):
                    # The previous build, now untagged: ~6 GB a source change leaves behind.
                    run(["docker", "rmi", before], timeout=300, env=env, check=False)
            with progress.phase(f"compose up: api, worker-cpu x{WORKERS}"):
                run([*compose, "up", "-d", "--no-build", "--scale", f"worker-cpu={WORKERS}",
                     "api", "worker-cpu"], timeout=600, env=env)
            exercise_stack(progress, compose, env, f"http://127.0.0.1:{port}", tmp_path)
        except BaseException:
            logs = run([*compose, "logs", "--no-color", "--tail", "60"], timeout=120, env=env,
                       check=False)
            progress.say(f"compose logs (tail):\n{logs.stdout[-12000:]}")
            raise
        finally:
            with progress.phase("compose down -v"):
                run([*compose, "down", "-v", "--remove-orphans"], timeout=300, env=env)
        services_sh_with_docker(progress, env)


def services_sh_with_docker(progress: Progress, env: dict[str, str]) -> None:
    """`make test`'s services on a machine with Docker but no PostgreSQL or Redis of its
    own: scripts/services.sh starts the compose file's `postgres` and `redis`, published on
    loopback, and the suite's URLs (superuser postgres, trust) reach them."""
    import psycopg
    import redis

    pg_port, redis_port = free_port(), free_port()
    script_env = {**env, "TRAINHUB_SERVICES_VIA": "docker",
                  "TRAINHUB_TEST_PG": f"postgresql://postgres@127.0.0.1:{pg_port}/postgres",
                  "TRAINHUB_TEST_REDIS": f"redis://127.0.0.1:{redis_port}"}
    services = ["docker", "compose", "-p", "trainhub-services", "-f",
                str(REPO / "docker-compose.yml"), "-f", str(REPO / "scripts" / "services.compose.yml")]
    try:
        with progress.phase("scripts/services.sh: PostgreSQL and Redis with Docker"):
            done = run(["bash", str(REPO / "scripts" / "services.sh")], timeout=600,
                       env=script_env)
            assert "starting postgres with Docker" in done.stdout, done.stdout
            assert f"PostgreSQL: answers on 127.0.0.1:{pg_port}" in done.stdout, done.stdout
            assert f"Redis: answers on 127.0.0.1:{redis_port}" in done.stdout, done.stdout
            with psycopg.connect(script_env["TRAINHUB_TEST_PG"], connect_timeout=10) as conn:
                # The superuser the suite needs: it creates a database per test session.
                assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = "
                                    "current_user").fetchone() == (True,)
            assert redis.Redis(port=redis_port, socket_timeout=10).ping()
    finally:
        run([*services, "down", "-v"], timeout=300, env=env, check=False)


def exercise_stack(progress: Progress, compose: list[str], env: dict[str, str], base: str,
                   tmp_path: Path) -> None:
    with progress.phase("api answers /health"):
        wait_for("api /health ok", lambda: httpx.get(f"{base}/health", timeout=5)
                 .json().get("status") == "ok", timeout=180)
    key = wait_for("admin key in /data/admin.key", lambda: run(
        [*compose, "exec", "-T", "api", "cat", "/data/admin.key"], timeout=60, env=env,
        check=False).stdout.strip(), timeout=60)
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{base}/jobs", timeout=10).status_code == 401, "auth is on in compose"

    ids = run([*compose, "ps", "-q", "worker-cpu"], timeout=60, env=env).stdout.split()
    assert len(ids) == WORKERS, ids
    hostnames = run(["docker", "inspect", "-f", "{{.Config.Hostname}}", *ids], timeout=60,
                    env=env).stdout.split()
    nodes = {f"trainhub@{h}" for h in hostnames}

    def cpu_workers():
        seen = httpx.get(f"{base}/workers", headers=headers, timeout=10).json()["workers"]
        names = {w["name"] for w in seen if "trainhub.cpu" in w["queues"]}
        return names if names >= nodes else None

    with progress.phase(f"both workers registered ({', '.join(sorted(nodes))})"):
        wait_for("two worker-cpu replicas in GET /workers", cpu_workers, timeout=180)

    with progress.phase(f"{N_JOBS} jobs (mlp on digits, cpu) submitted and finished"):
        jobs = []
        for i in range(N_JOBS):
            resp = httpx.post(f"{base}/jobs", headers=headers, timeout=30,
                              json={**JOB, "name": f"compose-{i}",
                                    "hyperparameters": {**JOB["hyperparameters"], "seed": i}})
            assert resp.status_code == 201, resp.text
            jobs.append(resp.json()["id"])
        done = {}
        deadline = time.monotonic() + 600
        while len(done) < len(jobs):
            for job_id in jobs:
                if job_id not in done:
                    job = httpx.get(f"{base}/jobs/{job_id}", headers=headers, timeout=10).json()
                    if job["status"] in TERMINAL:
                        done[job_id] = job
            assert time.monotonic() < deadline, f"jobs not finished: {set(jobs) - set(done)}"
            time.sleep(1)
    failed = {j["id"]: j["error"] for j in done.values() if j["status"] != "succeeded"}
    assert not failed, failed
    per_worker = Counter(j["worker"] for j in done.values())
    progress.say(f"jobs per worker: {dict(per_worker)}")
    for job_id in jobs:
        progress.say(f"  job {job_id} {done[job_id]['status']} on {done[job_id]['worker']} "
                     f"(device {done[job_id]['device']})")
    assert set(per_worker) == nodes, f"both replicas should take jobs: {dict(per_worker)}"

    # Each worker's own log names the jobs it ran.
    logs = run([*compose, "logs", "--no-color", "worker-cpu"], timeout=120, env=env).stdout
    ran = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line).strip() for line in logs.splitlines()
           if "trainhub.run_job" in line and "succeeded in" in line]
    for line in ran:
        progress.say(f"  log: {line[:200]}")
    assert len(ran) == N_JOBS, ran
    assert len({line.split("|")[0].strip() for line in ran}) == WORKERS, ran

    job_id = jobs[0]
    with progress.phase("checkpoint download"):
        listing = httpx.get(f"{base}/jobs/{job_id}/checkpoints", headers=headers,
                            timeout=10).json()
        assert [c["epoch"] for c in listing["checkpoints"]] == [1, 2, 3], listing
        best = next(c for c in listing["checkpoints"] if c["epoch"] == listing["best"])
        resp = httpx.get(f"{base}/jobs/{job_id}/checkpoints/best", headers=headers, timeout=60)
        assert resp.status_code == 200
        assert hashlib.sha256(resp.content).hexdigest() == best["sha256"]
        assert resp.headers["x-checkpoint-sha256"] == best["sha256"]
        path = tmp_path / "best.pt"
        path.write_bytes(resp.content)
        blob = torch.load(path, weights_only=True)
        assert blob["architecture"]["name"] == "mlp", blob["architecture"]
        progress.say(f"checkpoint: epoch {best['epoch']}, {len(resp.content)} bytes, "
                     f"sha256 {best['sha256'][:12]}…")

    with progress.phase("/predict"):
        images, labels = digit_pngs(30)
        files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
        resp = httpx.post(f"{base}/predict", headers=headers, timeout=120,
                          data={"job_id": job_id, "top_k": "3"}, files=files)
        assert resp.status_code == 200, resp.text
        predictions = resp.json()["predictions"]
        assert len(predictions) == len(images)
        accuracy = float(np.mean([p[0]["index"] == y for p, y in zip(predictions, labels)]))
        progress.say(f"predict: top-1 accuracy {accuracy:.2f} on {len(images)} digits")
        assert accuracy >= 0.7, accuracy

    with progress.phase("api and both workers healthy (worker check every 60s)"):
        names = ids + run([*compose, "ps", "-q", "api"], timeout=60, env=env).stdout.split()

        def healthy():
            states = run(["docker", "inspect", "-f", "{{.Name}} {{.State.Health.Status}}",
                          *names], timeout=60, env=env).stdout.split("\n")
            states = [s for s in states if s.strip()]
            if any(s.endswith("unhealthy") for s in states):
                pytest.fail(f"unhealthy: {states}")
            return all(s.endswith(" healthy") for s in states) and states

        states = wait_for("healthy containers", healthy, timeout=240, interval=3)
        progress.say(f"health: {'; '.join(states)}")
