"""Tenants for tests: users and keys made with the real `trainhub admin` commands, and
HTTP clients that send a key."""
from __future__ import annotations

import subprocess
import sys

import httpx

from tests.procs import REPO


def admin_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "cli", "admin", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"trainhub admin {' '.join(args)}: {done.stderr[-2000:]}"
    return done


def make_tenant(env: dict[str, str], name: str, admin: bool = False) -> str:
    """A new user and its first key (the key: the last line create-key prints)."""
    admin_cli(env, "create-user", name, *(["--admin"] if admin else []))
    return admin_cli(env, "create-key", name).stdout.strip().splitlines()[-1]


def client(base: str, key: str | None, **kwargs) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base, headers=headers, timeout=30, **kwargs)
