"""scripts/services.sh on a machine that lacks PostgreSQL or Redis: `make test` must either
start them another way or stop at once with one line saying what to install."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.procs import free_port

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "services.sh"
# What the script needs from a bare machine: bash and coreutils, nothing of PostgreSQL,
# Redis, Docker or apt.
BARE_TOOLS = ("bash", "timeout", "seq", "sleep", "dirname", "id", "ls", "sort", "tail",
              "basename", "grep", "mkdir")


def bare_path(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in BARE_TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return str(bin_dir)


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={"HOME": str(tmp_path), "PATH": bare_path(tmp_path), **env})


def test_on_a_bare_machine_it_stops_at_once_with_one_line_saying_what_to_install(tmp_path):
    closed = free_port()
    started = time.monotonic()
    done = run_script(tmp_path, TRAINHUB_TEST_PG=f"postgresql://postgres@127.0.0.1:{closed}/postgres")
    assert time.monotonic() - started < 15
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: PostgreSQL does not answer on 127.0.0.1:{closed} and none can be started "
        "here: install PostgreSQL (Debian: apt install postgresql) or Docker with Compose v2, "
        "or set TRAINHUB_TEST_PG to one that runs"]


def test_redis_missing_is_named_with_its_own_setting(tmp_path):
    closed = free_port()
    done = run_script(tmp_path, TRAINHUB_TEST_REDIS=f"redis://127.0.0.1:{closed}")
    # PostgreSQL (the default address) answers on this machine: only Redis is missing.
    assert "PostgreSQL: answers on 127.0.0.1:5432" in done.stdout
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: Redis does not answer on 127.0.0.1:{closed} and none can be started here: "
        "install Redis (Debian: apt install redis-server) or Docker with Compose v2, or set "
        "TRAINHUB_TEST_REDIS to one that runs")


def test_a_remote_address_is_not_started_here(tmp_path):
    done = run_script(tmp_path, TRAINHUB_TEST_PG="postgresql://postgres@192.0.2.1:5432/postgres")
    assert done.returncode == 1
    assert "not this machine: start it there" in done.stderr


def test_a_redis_that_is_down_is_started_with_this_machines_own_command(tmp_path):
    """The native way, for real: a private redis-server on a free port (never the shared
    one), started by the script because nothing answered there."""
    port = free_port()
    path = f"{bare_path(tmp_path)}:{os.path.dirname(shutil.which('redis-server'))}"
    env = {"HOME": str(tmp_path), "PATH": path, "TRAINHUB_TEST_REDIS": f"redis://127.0.0.1:{port}"}
    try:
        done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True,
                              timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        assert "starting Redis (redis-server)" in done.stdout
        assert f"Redis: answers on 127.0.0.1:{port}" in done.stdout
        import redis

        assert redis.Redis(port=port).ping()
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"],
                       capture_output=True, timeout=10)
