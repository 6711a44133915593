"""An uploaded dataset read by its name, and ids typed by their start, end to end: `trainhub`
as a user runs it (subprocesses) against the API and a real worker that decodes the upload,
trains on it (its log line names the dataset) and predicts with it; with authentication on,
the start of another tenant's id finds nothing, as its whole id does."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.integration.cli.conftest import invoke
from tests.procs import REPO, env_with
from tests.tenants import client

# Slow: the upload is decoded, and the job trained, by a real worker process.
pytestmark = pytest.mark.slow


def trainhub(base: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args, "--url", base], cwd=REPO,
                          env=env_with(TRAINHUB_URL=None, COLUMNS="120"),
                          capture_output=True, text=True, timeout=300)


def write_npz(path) -> None:
    rng = np.random.default_rng(5)
    np.savez(path, x_train=rng.integers(0, 256, (48, 8, 8), dtype=np.uint8),
             y_train=np.arange(48) % 2, x_test=rng.integers(0, 256, (12, 8, 8), dtype=np.uint8),
             y_test=np.arange(12) % 2, classes=np.array(["even", "odd"]))


def test_a_job_on_an_upload_names_it_and_every_verb_takes_id_starts(stack, tmp_path):
    base = stack["base"]
    archive = tmp_path / "tiny-cats.npz"
    write_npz(archive)
    uploaded = trainhub(base, "datasets", "upload", str(archive))
    assert uploaded.returncode == 0, uploaded.stderr
    dataset_id = uploaded.stdout.splitlines()[-1]
    assert "dataset tiny-cats is ready" in uploaded.stderr

    followed = trainhub(base, "submit", "--model", "mlp", "--dataset", dataset_id[:10],
                        "--epochs", "2", "--batch-size", "8", "--log-every", "2", "--follow")
    assert followed.returncode == 0, followed.stderr
    assert "mlp on tiny-cats (" in followed.stderr
    job_id = followed.stdout.splitlines()[0]
    assert followed.stdout.splitlines()[1] == (f"following job {job_id} (mlp-tiny-cats): mlp on "
                                               f"tiny-cats ({dataset_id})")
    start = job_id[:10]

    listed = trainhub(base, "list", "--limit", "50")
    [row] = [line for line in listed.stdout.splitlines() if job_id in line]
    assert "tiny-cats" in row and dataset_id not in row
    logs = trainhub(base, "logs", start)
    assert logs.returncode == 0, logs.stderr
    assert "dataset tiny-cats loaded: 48 train and 12 test images" in logs.stdout
    checkpoints = trainhub(base, "checkpoints", start)
    assert checkpoints.returncode == 0, checkpoints.stderr
    assert checkpoints.stdout.splitlines()[0].split("┃")[1].strip() == "tags"
    assert "latest" in checkpoints.stdout
    image = tmp_path / "x.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8), "L").save(image)
    predicted = trainhub(base, "predict", str(image), "--job", start, "-k", "2")
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.startswith(f"job {job_id}, checkpoint best")
    downloaded = trainhub(base, "download", start, "-o", str(tmp_path / "m.pt"))
    assert downloaded.returncode == 0 and (tmp_path / "m.pt").stat().st_size > 0
    shown = trainhub(base, "datasets", "show", dataset_id[:10])
    assert shown.returncode == 0 and dataset_id in shown.stdout and "tiny-cats" in shown.stdout


def test_the_start_of_another_tenants_id_finds_nothing(auth_stack, tmp_path):
    base = auth_stack["base"]
    archive = tmp_path / "alices.npz"
    write_npz(archive)
    owned = {}
    for tenant in ("alice", "bob"):
        c = client(base, auth_stack[tenant])
        job = c.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                    "hyperparameters": {"epochs": 1, "batch_size": 64}})
        assert job.status_code == 201, job.text
        dataset = c.post("/datasets", files={"file": ("d.npz", archive.read_bytes())})
        assert dataset.status_code == 202, dataset.text
        owned[tenant] = {"client": c, "job": job.json()["id"], "dataset": dataset.json()["id"]}
    admin = client(base, auth_stack["admin"])
    for me, other in (("alice", "bob"), ("bob", "alice")):
        c, mine, theirs = owned[me]["client"], owned[me], owned[other]
        for kind, path in (("job", "/jobs"), ("dataset", "/datasets")):
            found = c.get(path, params={"id_prefix": mine[kind][:12]}).json()[f"{kind}s"]
            assert [x["id"] for x in found] == [mine[kind]]
            assert c.get(path, params={"id_prefix": theirs[kind][:12]}).json()[f"{kind}s"] == []
            seen = admin.get(path, params={"id_prefix": theirs[kind][:12]}).json()[f"{kind}s"]
            assert [x["id"] for x in seen] == [theirs[kind]]
        key = auth_stack[me]
        start = theirs["job"][:12]
        refused = invoke("show", start, "--url", base, "--key", key)
        assert (refused.exit_code, refused.stderr) == (1, f"error: 404 job '{start}' not found\n")
        assert invoke("show", mine["job"][:12], "--url", base, "--key", key).exit_code == 0
    for tenant in owned.values():
        tenant["client"].close()
    admin.close()
