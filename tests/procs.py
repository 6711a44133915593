"""Starting real trainhub processes (API, worker, `up`) for tests, and waiting on jobs."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
TERMINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A trainhub subprocess in its own session, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.popen = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=REPO,
                                      env=env, stdout=self.log_file,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited ({self.popen.returncode}):\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{needle!r} not seen in {timeout}s:\n{self.log()[-3000:]}")

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signum)

    def stop(self, timeout: float = 30) -> int:
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait()
        self.log_file.close()
        return self.popen.returncode


def start_api(env: dict[str, str], tmp: Path, port: int | None = None) -> tuple[Proc, str]:
    port = port or free_port()
    proc = Proc(["api", "--port", str(port)], env, tmp / f"api-{port}.log")
    base = f"http://127.0.0.1:{port}"
    wait_http(base, proc)
    return proc, base


def start_worker(env: dict[str, str], tmp: Path, name: str = "w1") -> Proc:
    proc = Proc(["worker", "--name", f"{name}@test"], env, tmp / f"worker-{name}.log")
    proc.wait_for_log(" ready.")
    return proc


def wait_http(base: str, proc: Proc | None = None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"API exited:\n{proc.log()[-3000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"{base} did not answer in {timeout}s")


def wait_status(base: str, job_id: str, statuses=TERMINAL, timeout: float = 180,
                key: str | None = None) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/jobs/{job_id}", timeout=10, headers=headers).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.25)
    raise TimeoutError(f"job {job_id} still {job.get('status')} after {timeout}s: {job}")


def wait_until(predicate, timeout: float = 60, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met")


def env_with(**overrides: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PYTHONUNBUFFERED"] = "1"
    return env


def shared_dir() -> Path:
    """The project's shared/ folder (datasets): beside the checkout, as CI places it."""
    candidates = [os.environ.get("TRAINHUB_SHARED_DIR"), REPO.parent / "shared", "/work/shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "datasets").is_dir():
            return Path(candidate)
    raise FileNotFoundError("shared/datasets not found beside the checkout; set "
                            "TRAINHUB_SHARED_DIR to the folder holding datasets/")
