"""DDP jobs (world_size > 1) through worker.runner.run against the real Postgres and Redis,
with real helper-rank processes on gloo: the same accuracy band as one process, each point
written once, both ranks in the job's log, a resume after a graceful stop, and a helper
that dies failing the job instead of hanging it."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from core import jobs
from core.artifacts import get_store, resume_key
from core.db import session_scope, upgrade_schema
from core.jobspec import JobSpec
from core.tables import Job, JobLog, MetricPoint
from tests.integration.worker.test_runner import preempt_when
from worker.runner import run

WORKER = "test-worker"
# mlp on digits: 1437 training images, 45 steps of 32 an epoch; sgd at lr 0.05 reaches
# about 0.95 eval accuracy after 2 epochs, with one process or two.
HP = {"epochs": 2, "batch_size": 32, "lr": 0.05, "log_every": 10}


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def create_job(world_size: int, device: str = "cpu", **hp) -> str:
    spec = JobSpec(model="mlp", dataset="digits", device=device,
                   hyperparameters={**HP, "world_size": world_size, **hp}).resolved()
    with session_scope() as session:
        return jobs.create_job(session, spec).id


def load_job(job_id: str) -> Job:
    with session_scope() as session:
        return session.get(Job, job_id, populate_existing=True)


def point_keys(job_id: str) -> list[tuple[str, int]]:
    with session_scope() as session:
        return [(p.name, p.step) for p in session.scalars(
            select(MetricPoint).where(MetricPoint.job_id == job_id))]


def loss_values(job_id: str) -> list[float]:
    with session_scope() as session:
        return list(session.scalars(select(MetricPoint.value).where(
            MetricPoint.job_id == job_id, MetricPoint.name == "loss").order_by(MetricPoint.step)))


def log_lines(job_id: str) -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(JobLog.message).where(JobLog.job_id == job_id)
                                    .order_by(JobLog.id)))


def helper_pids() -> list[int]:
    """This process's children running worker.ddp.rank."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"worker.ddp.rank" in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_two_cpu_ranks_train_digits_like_one_and_write_each_point_once(caplog):
    single, double = create_job(1), create_job(2)
    with caplog.at_level(logging.INFO):  # the job log keeps what the logging level lets by
        started = time.monotonic()
        assert run(single, WORKER) == "succeeded"
        single_s = time.monotonic() - started
        assert run(double, WORKER) == "succeeded"
        double_s = time.monotonic() - started - single_s

    one, two = load_job(single), load_job(double)
    print(f"world_size 1: {one.final_metrics['eval_accuracy']:.4f} in {single_s:.1f}s; "
          f"world_size 2: {two.final_metrics['eval_accuracy']:.4f} in {double_s:.1f}s")
    assert one.final_metrics["eval_accuracy"] >= 0.9
    assert two.final_metrics["eval_accuracy"] >= 0.9
    assert abs(one.final_metrics["eval_accuracy"] - two.final_metrics["eval_accuracy"]) <= 0.03
    # The same global batches: as many steps, and the same points, each stored once.
    assert (two.epoch, two.step) == (one.epoch, one.step) == (2, 90)
    keys = point_keys(double)
    assert sorted(keys) == sorted(point_keys(single))
    assert [k for k, n in Counter(keys).items() if n > 1] == []
    lines = log_lines(double)
    assert any(line.startswith("rank 0/2 started on cpu") for line in lines), lines
    assert any(line.startswith("rank 1/2 started on cpu") for line in lines), lines
    assert helper_pids() == []


@pytest.mark.slow
def test_a_preempted_ddp_job_resumes_from_its_checkpoint_without_duplicate_points(monkeypatch,
                                                                                  caplog):
    """The runner's graceful stop (what SIGTERM sets), agreed by both ranks mid-epoch."""
    from worker.ddp import group as distributed

    preempt_when(monkeypatch, lambda pts: any(p.name == "loss" and p.step >= 20 for p in pts))
    # Rank 0 paces the ranks' stop verdicts (about a quarter second apart): here at every
    # step, so the stop lands inside this short epoch.
    monkeypatch.setattr(distributed, "SYNC_TARGET_S", 0.0)
    caplog.set_level(logging.INFO)
    job_id = create_job(2, epochs=1)
    assert run(job_id, WORKER) == "queued"
    job = load_job(job_id)
    assert job.status == "queued" and job.graceful_stops == 1
    assert get_store().exists(resume_key(job_id))
    assert helper_pids() == []

    monkeypatch.undo()
    assert run(job_id, WORKER) == "succeeded"
    job = load_job(job_id)
    assert job.attempts == 2 and job.resumed_from["epoch"] == 1
    assert job.resumed_from["step"] == 20 and job.step == 45
    assert job.final_metrics["eval_accuracy"] >= 0.85
    keys = point_keys(job_id)
    assert [k for k, n in Counter(keys).items() if n > 1] == []
    assert sorted(s for name, s in keys if name == "loss") == [10, 20, 30, 40]
    # Both ranks' sums survived the stop: the losses are those of an undisturbed run.
    single = create_job(1, epochs=1)
    assert run(single, WORKER) == "succeeded"
    assert loss_values(job_id) == pytest.approx(loss_values(single), abs=1e-4)
    assert sum("rank 1/2 started" in line for line in log_lines(job_id)) == 2


@pytest.mark.slow
def test_a_helper_rank_that_dies_fails_the_job_with_its_reason():
    job_id = create_job(2, epochs=1000)
    killed: list[int] = []

    def kill_the_helper_once_training():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if point_keys(job_id):  # both ranks are in the loop
                for pid in helper_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_helper_once_training)
    killer.start()
    started = time.monotonic()
    status = run(job_id, WORKER)
    killer.join()
    assert killed, "the helper rank never started training"
    assert status == "failed" and time.monotonic() - started < 60
    job = load_job(job_id)
    assert "rank 1/2 killed by SIGKILL" in job.error, job.error
    assert helper_pids() == []


def test_a_cuda_job_with_more_ranks_than_gpus_fails_before_claiming(monkeypatch):
    # The one mock the rules allow: a GPU count (this machine may have none).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    job_id = create_job(2, device="cuda")

    assert run(job_id, WORKER) == "failed"

    job = load_job(job_id)
    assert job.status == "failed" and job.attempts == 0 and job.worker is None
    assert "world_size 2 needs 2 CUDA devices" in job.error and "has 1" in job.error


def test_a_helper_rank_that_cannot_start_fails_the_start_with_its_error():
    from core.jobspec import Hyperparameters
    from worker.ddp.launch import RankFailed, process_group

    spec = JobSpec(model="mlp", dataset="digits", device="cpu",
                   hyperparameters={**HP, "world_size": 2}).resolved()
    hp = Hyperparameters(**spec["hyperparameters"])
    started = time.monotonic()
    with pytest.raises(RankFailed) as excinfo:
        with process_group("f" * 32, hp, [torch.device("cpu")] * 2, spec,
                           {"builtin": "no-such-dataset"}, None):
            pytest.fail("the group started without its helper")
    assert str(excinfo.value).startswith("rank 1/2 failed: DatasetUnavailable: unknown "
                                         "dataset 'no-such-dataset'")
    assert time.monotonic() - started < 60 and helper_pids() == []
