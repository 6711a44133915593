"""The worker's row in `workers`: what it consumes and has, refreshed every
worker_heartbeat_seconds from the worker's main process, deleted when it stops, or when its
data folder can no longer be written (then the worker stops: it would fail every job)."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from typing import Callable

import torch

from core import workers
from core.artifacts import data_dir_problem
from core.config import Settings
from core.db import session_scope

log = logging.getLogger(__name__)


# Asked in a child process: reading a GPU's properties initialises CUDA, and the worker's
# main process must not, or the pool processes it forks could not use the GPU.
_GPU_PROBE = """
import json, torch
print(json.dumps([{"name": f"cuda:{i}", "type": "cuda",
                   "model": torch.cuda.get_device_properties(i).name,
                   "memory_bytes": int(torch.cuda.get_device_properties(i).total_memory)}
                  for i in range(torch.cuda.device_count())]))
"""


def devices() -> list[dict]:
    """The GPUs this worker can see (after CUDA_VISIBLE_DEVICES), else the CPU."""
    if torch.cuda.is_available():  # no CUDA context: fork-safe
        try:
            probe = subprocess.run([sys.executable, "-c", _GPU_PROBE], capture_output=True,
                                   text=True, timeout=120, check=True)
            return json.loads(probe.stdout)
        except (subprocess.SubprocessError, ValueError) as exc:
            log.warning("could not list the GPUs: %s", exc)
            return [{"name": "cuda", "type": "cuda", "model": None, "memory_bytes": None}]
    return [{"name": "cpu", "type": "cpu", "model": f"{os.cpu_count()} cores",
             "memory_bytes": None}]


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class Presence:
    """A thread that keeps the worker's row fresh; leave() stops it and deletes the row.
    Before each beat it checks that the data folder takes a file: if not, it logs why,
    leaves, and calls on_unwritable (the worker's shutdown)."""

    def __init__(self, settings: Settings, name: str, queues: list[str], concurrency: int,
                 on_unwritable: Callable[[], None] | None = None):
        self.settings, self.name, self.on_unwritable = settings, name, on_unwritable
        self.fields = {"hostname": socket.gethostname(), "pid": os.getpid(),
                       "queues": queues, "devices": devices(),
                       "memory_bytes": host_memory_bytes(), "concurrency": concurrency}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainhub-presence",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            problem = data_dir_problem(self.settings)
            if problem is not None:
                log.error("%s: this worker takes no more jobs and stops", problem)
                self.leave()
                if self.on_unwritable is not None:
                    self.on_unwritable()
                return
            try:
                with session_scope() as session:
                    workers.beat(session, self.name, **self.fields)
            except Exception as exc:  # the database restarting: the next beat tries again
                log.warning("worker heartbeat failed: %s", str(exc).splitlines()[0][:200])
            if self._done.wait(self.settings.worker_heartbeat_seconds):
                return

    def leave(self) -> None:
        """Stop beating and delete the row (best effort: a row left behind goes stale)."""
        if self._done.is_set():
            return
        self._done.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)  # a beat under way must not re-create the row
        try:
            with session_scope() as session:
                workers.leave(session, self.name)
        except Exception as exc:
            log.warning("could not delete this worker's row: %s", exc)
