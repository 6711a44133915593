"""Starts a DDP job's helper ranks (1..N-1) beside the runner, which is rank 0, and watches
them while the job trains.

Rank 0 stays in the runner's own process (the Celery pool child), so the lease heartbeat,
the reporter, checkpoints, resume, stop flags and the job log work as for any job; only
rank 0 writes. The helpers are plain subprocesses (`python -m worker.ddp.rank`): a Celery
prefork child is daemonic and may not start multiprocessing children, but it may Popen.
They load the same dataset and resume checkpoint read-only, run the same fit() with a
reporter that writes nothing, and print their log records as JSON lines, which a thread
here logs into the job's log (`rank 1/2 started on cpu ...`).

A helper that dies fails the job with its own error: its connections close, so rank 0's
next collective raises (gloo at once; NCCL at its watchdog's timeout), and the error
raised here then names the helper and why it ended.
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

import torch
from torch.distributed import PrefixStore, TCPStore

from worker.ddp.group import Distributed, join, leave

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0  # for every helper to load its data and model and say it is ready
EXIT_WAIT_S = 30.0  # for the helpers to finish on their own after the last step
HOST = "127.0.0.1"


class RankFailed(Exception):
    """A helper rank ended with an error (or did not start); the message says which, why."""


def rank_devices(requested: str, world_size: int) -> list[torch.device]:
    """The device of each rank: GPU i for rank i on cuda (one worker holds them all), or
    the CPU for all. `auto` takes GPUs only when this worker has enough of them."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == "cuda" and gpus < world_size:
        raise RuntimeError(f"world_size {world_size} needs {world_size} CUDA devices on one "
                           f"worker; this worker has {gpus}")
    if requested == "cpu" or gpus < world_size:
        return [torch.device("cpu")] * world_size
    return [torch.device("cuda", i) for i in range(world_size)]


def ready_key(rank: int) -> str:
    return f"ready/{rank}"


def group_store(store) -> PrefixStore:
    """The part of the job's store that torch.distributed uses (the rest holds readiness)."""
    return PrefixStore("pg", store)


def parse_record(line: str) -> tuple[int, str, str]:
    """(level, logger name, message) of a line a helper printed: one of its log records as
    worker.ddp.rank writes them, or else (output of C++ code) a warning as it stands."""
    try:
        record = json.loads(line)
        level, source, message = record["level"], record["source"], record["message"]
    except (ValueError, KeyError, TypeError):
        return logging.WARNING, "worker.ddp.rank", line.rstrip()
    levelno = logging.getLevelName(level)
    return (levelno if isinstance(levelno, int) else logging.WARNING), source, message


class Helper:
    """One helper rank's process, and the thread that relays its log lines."""

    def __init__(self, rank: int, world_size: int, config: dict):
        self.rank, self.world_size = rank, world_size
        self.last_error: str | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.ddp.rank", json.dumps(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C reaches the worker, never the helper
            # directly; rank 0 decides when every rank stops.
            start_new_session=True, text=True, errors="replace")
        # The job's id lives in a context variable, which a new thread does not inherit.
        context = contextvars.copy_context()
        self.relay = threading.Thread(target=context.run, args=(self._relay,), daemon=True,
                                      name=f"rank-{rank}-log")
        self.relay.start()

    def _relay(self) -> None:
        for line in self.proc.stdout:
            levelno, source, message = parse_record(line)
            if not message:
                continue
            if levelno >= logging.ERROR:
                self.last_error = message.split("\n", 1)[0]
            logging.getLogger(source).log(levelno, "rank %d/%d %s", self.rank,
                                          self.world_size, message)

    def failure(self) -> str | None:
        """Why it ended, if it ended badly."""
        code = self.proc.poll()
        if code is None or code == 0:
            return None
        self.relay.join(timeout=5)  # its last lines (its error) first
        if self.last_error:
            why = self.last_error
        elif code < 0:
            why = f"killed by {signal.Signals(-code).name}"
        else:
            why = f"exit code {code}"
        return f"rank {self.rank}/{self.world_size} {why}"

    def stop(self, wait_s: float) -> None:
        """Wait up to wait_s for it to end on its own, then kill it."""
        try:
            self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            if wait_s > 0:
                log.warning("rank %d/%d did not end; killing it", self.rank, self.world_size)
            self.proc.kill()
            self.proc.wait()
        self.relay.join(timeout=5)


@contextmanager
def process_group(job_id: str, hp, devices: list[torch.device], spec: dict, dataset: dict,
                  resume_key: str | None) -> Iterator[Distributed]:
    """Start the helper ranks, wait until each is ready, join the group as rank 0; on the
    way out leave it and make sure no helper outlives the attempt."""
    world_size = hp.world_size
    store = TCPStore(HOST, 0, world_size, is_master=True, wait_for_workers=False,
                     timeout=timedelta(seconds=START_TIMEOUT_S))
    threads_before = torch.get_num_threads()
    threads = max(1, threads_before // world_size) if devices[0].type == "cpu" else threads_before
    helpers: list[Helper] = []
    ended_well = False
    try:
        for rank in range(1, world_size):
            helpers.append(Helper(rank, world_size, {
                "job_id": job_id, "spec": spec, "rank": rank, "world_size": world_size,
                "device": str(devices[rank]), "port": store.port, "threads": threads,
                "dataset": dataset, "resume_key": resume_key}))
        _wait_until_ready(store, helpers)
        torch.set_num_threads(threads)
        log.info("rank 0/%d started on %s (pid %d, %d thread(s))", world_size, devices[0],
                 os.getpid(), threads)
        group = join(0, world_size, devices[0], group_store(store))
        try:
            yield group
            ended_well = True
        except Exception as exc:
            failure = _first_failure(helpers, wait_s=5.0)
            if failure is not None:  # the helper's own error explains rank 0's
                raise RankFailed(failure) from exc
            raise
    finally:
        leave()
        torch.set_num_threads(threads_before)
        for helper in helpers:
            helper.stop(EXIT_WAIT_S if ended_well else 0.0)
        failure = _first_failure(helpers, wait_s=0.0) if ended_well else None
        if failure is not None:  # after the last collective: the job's outcome stands
            log.warning("%s after the training ended", failure)


def _wait_until_ready(store, helpers: list[Helper]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    keys = [ready_key(h.rank) for h in helpers]
    while not store.check(keys):
        failure = _first_failure(helpers, wait_s=0.0)
        if failure is not None:
            raise RankFailed(failure)
        if time.monotonic() > deadline:
            raise RankFailed(f"the helper ranks were not ready after {START_TIMEOUT_S:g}s")
        time.sleep(0.05)


def _first_failure(helpers: list[Helper], wait_s: float) -> str | None:
    """The first helper failure, waiting up to wait_s for one to show: when rank 0's
    collective broke, the helper that broke it may be exiting just now."""
    deadline = time.monotonic() + wait_s
    while True:
        for helper in helpers:
            failure = helper.failure()
            if failure is not None:
                return failure
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)
