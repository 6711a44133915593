"""A job with `pretrained` through worker.runner.run in this process, against the real
Postgres and Redis: with no weights file and no network it fails in one line naming the
file, the folder to put it in and its URL; with a TORCH_HOME holding a file that matches its
name's hash it trains, froze what freeze "backbone" froze, and checkpoints the weights'
normalisation. The weights entry is the test's own (torchvision's would point at
download.pytorch.org), its file written by the test."""
from __future__ import annotations

import pytest
import torch
from sqlalchemy import select

from core import jobs
from core.artifacts import get_store
from core.db import session_scope, upgrade_schema
from core.jobspec import JobSpec
from core.tables import Checkpoint
from models import pretrained
from tests.integration.worker.test_runner import load_job
from tests.pretrained_files import (
    IMAGENET,
    published_state,
    weights_entry,
    write_weights,
)
from worker.runner import run

WORKER = "test-worker"
ARCH = "shufflenet_v2_x0_5"
HP = {"epochs": 1, "batch_size": 128, "log_every": 5}
# Nothing listens there: a download is refused at once, as offline.
UNREACHABLE = "http://127.0.0.1:9/models/"


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def use_weights(monkeypatch, file_name: str):
    """The job's weights (torchvision.shufflenet_v2_x0_5's IMAGENET1K_V1) are the test's."""
    entry = weights_entry(file_name, url=UNREACHABLE)
    seen = []

    def lookup(architecture: str, name: str):
        seen.append((architecture, name))
        return entry

    monkeypatch.setattr(pretrained, "torchvision_weights", lookup)
    return entry, seen


def create_job(**hyperparameters) -> str:
    """A queued job of torchvision.shufflenet_v2_x0_5 on digits from IMAGENET1K_V1."""
    spec = JobSpec(model=f"torchvision.{ARCH}", dataset="digits", pretrained="IMAGENET1K_V1",
                   hyperparameters={**HP, **hyperparameters}, device="cpu").resolved()
    with session_scope() as session:
        return jobs.create_job(session, spec).id


def test_a_missing_weights_file_offline_fails_the_job_in_one_line(torch_home, monkeypatch):
    entry, seen = use_weights(monkeypatch, f"{ARCH}-0123abcd.pth")
    job_id = create_job()

    assert run(job_id, WORKER) == "failed"

    job = load_job(job_id)
    assert job.status == "failed" and seen[0] == (ARCH, "IMAGENET1K_V1")
    assert job.error == (
        f"pretrained: the weights file {ARCH}-0123abcd.pth is not in {torch_home} and could "
        f"not be downloaded from {entry.url} (URLError: <urlopen error [Errno 111] "
        "Connection refused>); put that file in that folder "
        "(docs/operations.md#pretrained-weights-offline)")
    assert list(torch_home.iterdir()) == []  # no partial download left


def test_a_matching_file_in_torch_home_starts_the_job_and_it_succeeds(torch_home,
                                                                       monkeypatch):
    state = published_state(ARCH)
    path = write_weights(torch_home, state, ARCH)
    use_weights(monkeypatch, path.name)
    job_id = create_job(freeze="backbone", optimizer="adamw", weight_decay=0.1)

    assert run(job_id, WORKER) == "succeeded"

    job = load_job(job_id)
    assert job.status == "succeeded" and job.error is None
    [checkpoint] = jobs_checkpoints(job_id)
    with get_store().open(checkpoint) as f:
        blob = torch.load(f, weights_only=True)
    # Grayscale digits repeated to three channels: the weights' mean and std averaged.
    assert blob["normalization"]["mean"] == [pytest.approx(sum(IMAGENET[0]) / 3)]
    assert blob["normalization"]["std"] == [pytest.approx(sum(IMAGENET[1]) / 3)]
    trained = blob["model_state"]
    # The backbone as published, to the bit; the head new (10 classes) and trained.
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(trained[f"net.{key}"], value), key
    assert trained["net.fc.weight"].shape == (10, state["fc.weight"].shape[1])


def jobs_checkpoints(job_id: str) -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(Checkpoint.storage_key)
                                    .where(Checkpoint.job_id == job_id)))


@pytest.mark.slow  # a helper rank process: about 10 s on 2 cores
def test_ddp_ranks_normalise_as_rank_0_and_train_the_head_as_one_process(torch_home,
                                                                         monkeypatch):
    """Two CPU ranks (the helper takes the normalisation from torchvision's own entry, the
    weights from rank 0 through DDP) train the head as one process does: the frozen
    backbone gives both ranks the same features. 1408 training images (2% held out) make 22
    batches of 64, 32 a rank: differences are the sums' order alone (measured 3e-5; a
    helper normalising with the dataset's statistics instead: 1.0). The published state's
    BatchNorm statistics are calibrated: a fresh network's give features of about 1e-6,
    which no normalisation would change visibly."""
    state = published_state(ARCH, calibrate=True)
    path = write_weights(torch_home, state, ARCH)
    use_weights(monkeypatch, path.name)
    heads = []
    for world_size in (1, 2):
        job_id = create_job(freeze="backbone", lr=0.1, batch_size=64, world_size=world_size,
                            validation_fraction=0.02)
        assert run(job_id, WORKER) == "succeeded", load_job(job_id).error
        [key] = jobs_checkpoints(job_id)
        with get_store().open(key) as f:
            heads.append(torch.load(f, weights_only=True)["model_state"]["net.fc.weight"])
    print("largest difference:", (heads[0] - heads[1]).abs().max().item())
    torch.testing.assert_close(heads[1], heads[0], rtol=0, atol=1e-3)
