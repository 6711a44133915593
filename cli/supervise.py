"""Run child processes as one service: a signal stops them all, and so does one child's exit.

Used by `trainhub up` (API + worker) and by `trainhub worker` on a multi-GPU machine (one
worker per GPU). Each child gets its own session, so that a terminal's Ctrl-C reaches only
the supervisor, which stops the children in order.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

STOP_GRACE_SECONDS = 30

log = logging.getLogger("trainhub")


def start(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, start_new_session=True)


def supervise(children: dict[str, subprocess.Popen], what: str) -> int:
    """Wait for the children; SIGINT/SIGTERM to this process stops them (SIGTERM to each,
    SIGKILL to each whole process group after STOP_GRACE_SECONDS). Returns 0, or the exit
    code of the first child that ended on its own."""
    stopped_at: float | None = None

    def stop(signum, _frame):
        nonlocal stopped_at
        if stopped_at is not None:
            return
        stopped_at = time.monotonic()
        log.info("stopping %s", what)
        for proc in children.values():
            if proc.poll() is None:
                # The child alone, not its group: a worker passes the signal on to the pool
                # processes running a job (which hand it back) and closes its idle ones; a
                # SIGTERM of its own killed those, an ERROR line at every clean stop.
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while any(p.poll() is None for p in children.values()):
        for name, proc in children.items():
            if proc.poll() is not None and stopped_at is None:
                log.error("%s exited with code %s; stopping the rest", name, proc.returncode)
                code = proc.returncode or 1
                stop(signal.SIGTERM, None)
        if stopped_at is not None and time.monotonic() - stopped_at > STOP_GRACE_SECONDS:
            for proc in children.values():
                if proc.poll() is None:
                    log.warning("pid %d did not stop in %ds; killing it", proc.pid,
                                STOP_GRACE_SECONDS)
                    os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.2)
    return code
