"""A job whose model is a tenant's program (a ResidualNet pair stored by core.programs)
through worker.runner.run in this process, against the real Postgres and Redis: it trains on
digits to >= 0.90 eval accuracy; its eval-mode outputs equal an eager copy's with the same
weights; stopped mid-epoch and resumed it ends with the undisturbed run's weights to the
bit; /predict's Predictor serves its checkpoint, refuses it once the program's files are
not those it was trained on, and its .pt2 export reproduces /predict."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from api.predictor import Predictor
from core import checkpoint_format as ckpt
from core import jobs, programs
from core.artifacts import checkpoint_key, get_store, program_key
from core.config import get_settings
from core.db import session_scope, upgrade_schema
from core.export import ExportedClassifier, export_pt2
from core.image_decode import normalize
from core.jobspec import JobSpec
from core.program_models import build_program_model
from core.tables import Program
from core.tenancy import Tenant
from tests.integration.worker.test_runner import load_job, preempt_when
from tests.programs import ResidualNet, export
from worker.data import read_dataset
from worker.runner import run

WORKER = "test-worker"
HP = {"epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": 0.01,
      "scheduler": "cosine", "log_every": 5, "seed": 3}
SHAPE = (1, 8, 8)


def digits_net() -> ResidualNet:
    """tests.programs' ResidualNet for digits: one input channel, ten classes."""
    torch.manual_seed(0)
    net = ResidualNet(channels=32, classes=10)
    net.stem[0] = nn.Conv2d(1, 32, 3, padding=1)
    return net


def archive(net: nn.Module, training: bool) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.export.save(export(net, training, example=torch.randn(4, *SHAPE)), buffer)
    buffer.seek(0)
    return buffer


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


@pytest.fixture
def program(data_dir):
    """The tenant and its program's id (its files in this test's data dir)."""
    tenant = Tenant(user_id="program-jobs", name="program-jobs", is_admin=False)
    net = digits_net()
    uploads = [programs.Upload(field, archive(net, training), None, f"net-{field}.pt2")
               for field, training in (("file", True), ("eval_file", False))]
    with session_scope() as session:
        row = programs.accept_program(session, tenant, uploads[0], uploads[1], "digits-net",
                                      get_settings())
        made = tenant, row.id, row.sha256
    yield made
    # The database is shared with the rest of the run (GET /models as an admin lists all).
    with session_scope() as session:
        session.delete(session.get(Program, made[1]))


def create_job(tenant: Tenant, program_id: str) -> str:
    spec = JobSpec(model=program_id, dataset="digits", hyperparameters=HP,
                   device="cpu").resolved()
    with session_scope() as session:
        job = jobs.create_job(session, spec)
        job.owner = tenant.user_id
        return job.id


def final_checkpoint(job_id: str) -> tuple[str, dict]:
    key = checkpoint_key(job_id, HP["epochs"])
    with get_store().open(key) as f:
        return key, ckpt.load(f)


@pytest.mark.slow  # three attempts of 10 epochs: 2 to 4 minutes on 2 busy cores
def test_a_program_trains_resumes_bit_identically_predicts_and_exports(program,
                                                                        monkeypatch,
                                                                        tmp_path):
    tenant, program_id, sha256 = program
    store = get_store()

    plain = create_job(tenant, program_id)
    assert run(plain, WORKER) == "succeeded", load_job(plain).error
    key, blob = final_checkpoint(plain)
    assert blob["architecture"] == {"name": program_id, "input_shape": list(SHAPE),
                                    "num_classes": 10, "program_sha256": sha256}
    assert blob["metrics"]["eval_accuracy"] >= 0.90

    # Stopped in its sixth epoch (as SIGTERM stops it), then resumed by a second attempt.
    steps_per_epoch = -(-1437 // HP["batch_size"])
    preempt_when(monkeypatch, lambda pts: any(p.step > 5 * steps_per_epoch + 10 for p in pts))
    stopped = create_job(tenant, program_id)
    assert run(stopped, WORKER) == "queued"
    monkeypatch.undo()
    assert run(stopped, WORKER) == "succeeded"
    job = load_job(stopped)
    assert job.attempts == 2 and job.resumed_from["epoch"] == 6
    assert job.resumed_from["step"] > 5 * steps_per_epoch
    _, resumed = final_checkpoint(stopped)
    assert resumed["model_state"].keys() == blob["model_state"].keys()
    for name, value in blob["model_state"].items():
        assert torch.equal(resumed["model_state"][name], value), name

    # The trained pair in eval mode is the eager network with the same weights, to the bit.
    pair = build_program_model(store, program_id)
    pair.load_state_dict(blob["model_state"])
    pair.set_mode(False)
    eager = digits_net()
    eager.load_state_dict(blob["model_state"])
    eager.eval()
    dataset = read_dataset({"builtin": "digits"}, get_settings(), store)
    images = dataset.test.images[:16]
    x = normalize(images, torch.tensor(blob["normalization"]["mean"]).view(1, -1, 1, 1),
                  torch.tensor(blob["normalization"]["std"]).view(1, -1, 1, 1))
    with torch.no_grad():
        outputs = pair(x)
        assert torch.equal(outputs, eager(x))

    # /predict on the checkpoint: the pair's eval-mode probabilities.
    loaded = Predictor(store, capacity=2).get(plain, key, "sha")
    served = Predictor.probabilities(loaded, images)
    torch.testing.assert_close(served, torch.softmax(outputs, dim=1), rtol=0, atol=1e-6)

    # Its .pt2 export (the eval graph with the job's weights) reproduces /predict.
    path = tmp_path / "model.pt2"
    export_pt2(ExportedClassifier(loaded.model, loaded.mean, loaded.std, loaded.classes,
                                  loaded.shape), path)
    exported = torch.export.load(path).module()
    torch.testing.assert_close(exported(images), served, rtol=0, atol=1e-5)

    # Weights fit the program they were trained on only: other files under its id are
    # refused (a 409 at /predict), not served.
    store.save(program_key(program_id, "eval"),
               lambda f: f.write(archive(digits_net(), True).getvalue()))
    with pytest.raises(ckpt.CheckpointError, match="sha256"):
        Predictor(store, capacity=2).get(plain, key, "sha")
