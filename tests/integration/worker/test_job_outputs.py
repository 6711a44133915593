"""What a job leaves besides metric points: its own log lines (GET /jobs/{id}/logs) and
TensorBoard event files, from worker.runner.run in process on the real Postgres."""
from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from api.main import app
from core import jobs
from core.config import get_settings
from core.db import session_scope, upgrade_schema
from core.jobspec import JobSpec
from core.tensorboard_runs import job_runs
from worker.runner import run

HP = {"epochs": 2, "batch_size": 64, "log_every": 5}


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def new_job(dataset: str = "digits") -> str:
    with session_scope() as session:
        return jobs.create_job(session, JobSpec(model="mlp", dataset=dataset, device="cpu",
                                                hyperparameters=HP).resolved()).id


def test_a_job_logs_its_claim_data_epochs_and_end_lines_that_carry_its_id(caplog):
    job_id = new_job()
    with caplog.at_level(logging.INFO):
        assert run(job_id, "logs-worker") == "succeeded"
    with TestClient(app) as client:
        page = client.get(f"/jobs/{job_id}/logs").json()
        text = "\n".join(line["message"] for line in page["lines"])
        assert "claimed by logs-worker on device cpu" in text
        assert "dataset digits loaded: 1437 train and 360 test images" in text
        assert "epoch 1: train_loss=" in text and "epoch 2: train_loss=" in text
        assert "[1,     5] loss:" in text
        assert "succeeded" in [line["message"] for line in page["lines"]]
        # The job's own log names no job in front: each line is this job's.
        assert not [m for m in text.splitlines() if m.startswith(f"job {job_id}")]
        assert {line["attempt"] for line in page["lines"]} == {1}
        ids = [line["id"] for line in page["lines"]]
        assert ids == sorted(ids)
        # Paged: since= continues after a line, with nothing repeated.
        first = client.get(f"/jobs/{job_id}/logs", params={"limit": 3}).json()
        rest = client.get(f"/jobs/{job_id}/logs",
                          params={"since": first["next_since"]}).json()
        assert [x["id"] for x in first["lines"] + rest["lines"]] == ids
        assert rest["status"] == "succeeded"
        assert client.get("/jobs/" + "f" * 32 + "/logs").status_code == 404
    # Every record logged while the job ran carries its id (for the worker's log format).
    during = [r for r in caplog.records if "loss:" in r.getMessage()]
    assert during and all(r.job_id == job_id for r in during)


def test_a_failing_job_logs_the_error_with_its_cause(caplog):
    job_id = new_job(dataset="0" * 32)
    with caplog.at_level(logging.INFO):  # as the worker's own logging is configured
        assert run(job_id, "logs-worker") == "failed"
    with TestClient(app) as client:
        lines = client.get(f"/jobs/{job_id}/logs").json()["lines"]
    assert lines, lines
    assert any(line["level"] == "INFO" and "failed" in line["message"]
               and "unknown dataset" in line["message"] for line in lines)


def test_tensorboard_event_files_hold_every_loss_point():
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job_id = new_job()
    assert run(job_id, "tb-worker") == "succeeded"
    root = get_settings().tensorboard_dir
    folder = root / f"mlp-digits-{job_id[:8]}"  # the run is named after the job
    assert job_runs(root, job_id) == [folder]
    acc = EventAccumulator(str(folder))
    acc.Reload()
    loss = acc.Scalars("loss")
    with session_scope() as session:
        from sqlalchemy import select

        from core.tables import MetricPoint
        stored = session.execute(select(MetricPoint.step, MetricPoint.value).where(
            MetricPoint.job_id == job_id, MetricPoint.name == "loss")
            .order_by(MetricPoint.step)).all()
    assert [e.step for e in loss] == [s for s, _ in stored] and len(stored) == 2 * (23 // 5)
    assert [e.value for e in loss] == pytest.approx([v for _, v in stored], rel=1e-6)
    assert {"eval_accuracy", "train_loss", "lr"} <= set(acc.Tags()["scalars"])


@pytest.fixture
def always_streamed(monkeypatch):
    monkeypatch.setenv("TRAINHUB_DEVICE_DATASET_FRACTION", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_streamed_dataset_is_said_in_the_job_log_and_trains_the_same(always_streamed,
                                                                      caplog):
    """TRAINHUB_DEVICE_DATASET_FRACTION=0 streams even on the CPU (worker.feed): the job
    says so in its log and ends with what the resident path reaches."""
    job_id = new_job()
    with caplog.at_level(logging.INFO):
        assert run(job_id, "logs-worker") == "succeeded"
    with TestClient(app) as client:
        lines = client.get(f"/jobs/{job_id}/logs").json()["lines"]
        streamed = client.get(f"/jobs/{job_id}").json()["metrics"]
    assert any("held in host memory and streamed to cpu a block at a time" in line["message"]
               for line in lines)
    with pytest.MonkeyPatch.context() as mp:  # the default share: held where it trains
        mp.setenv("TRAINHUB_DEVICE_DATASET_FRACTION", "0.5")
        get_settings.cache_clear()
        resident_id = new_job()
        assert run(resident_id, "logs-worker") == "succeeded"
        with TestClient(app) as client:
            resident = client.get(f"/jobs/{resident_id}").json()["metrics"]
    timing = {"samples_per_second"}
    assert {k: v for k, v in streamed.items() if k not in timing} == \
        {k: v for k, v in resident.items() if k not in timing}
