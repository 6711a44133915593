"""The `trainhub` client verbs as a user runs them (`python -m cli ... --url`, subprocesses)
against a real API and a real worker: submit --follow prints the tutorial's lines and exits
0; a failed, a refused and a cancelled job exit 1 with their reason; checkpoints, download,
predict and metrics on the trained job; a large upload waited for."""
from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from cli.output import size
from tests.procs import REPO, env_with

pytestmark = pytest.mark.slow

LOSS_LINE = re.compile(r"^\[(\d+), +(\d+)\] loss: (\d+\.\d{3})$")
EPOCH_LINE = re.compile(r"^epoch (\d+): eval_accuracy=(\d\.\d{4}) eval_loss=\d+\.\d{4} ")


def trainhub(base: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # No TRAINHUB_URL: --url alone says where the API is.
    return subprocess.run([sys.executable, "-m", "cli", *args, "--url", base], cwd=REPO,
                          env=env_with(TRAINHUB_URL=None), capture_output=True, text=True,
                          timeout=timeout)


def popen_trainhub(base: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *args, "--url", base], cwd=REPO,
                            env=env_with(TRAINHUB_URL=None), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def no_traceback(run) -> None:
    assert "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr


@pytest.fixture(scope="module")
def followed(stack):
    """The tutorial job, submitted and followed by one command until it ended."""
    started = time.monotonic()
    run = trainhub(stack["base"], "submit", "--model", "mlp", "--dataset", "digits",
                   "--epochs", "2", "--batch-size", "16", "--log-every", "20", "--follow")
    no_traceback(run)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    return {"job_id": lines[0], "lines": lines, "stderr": run.stderr,
            "seconds": time.monotonic() - started}


def test_submit_follow_prints_the_tutorial_lines_and_exits_0(stack, followed):
    job_id, lines = followed["job_id"], followed["lines"]
    assert re.fullmatch(r"[0-9a-f]{32}", job_id), lines
    assert "submitted mlp-digits: mlp on digits, 2 epochs, batch 16" in followed["stderr"]
    losses = [LOSS_LINE.match(line) for line in lines if line.startswith("[")]
    assert all(losses), lines
    # 1437 training images in batches of 16: 90 mini-batches, a point every 20.
    assert [(int(m[1]), int(m[2])) for m in losses] == [
        (epoch, batch) for epoch in (1, 2) for batch in (20, 40, 60, 80)]
    assert lines[lines.index(losses[0].string)] == f"[1,    20] loss: {losses[0][3]}"
    stored = httpx.get(f"{stack['base']}/jobs/{job_id}/metrics",
                       params={"name": "loss"}).json()["metrics"]
    assert [m[3] for m in losses] == ["%.3f" % p["value"] for p in stored]
    evals = [EPOCH_LINE.match(line) for line in lines if line.startswith("epoch ")]
    assert [int(m[1]) for m in evals if m] == [1, 2], lines
    job = httpx.get(f"{stack['base']}/jobs/{job_id}").json()
    assert evals[-1][2] == "%.4f" % job["metrics"]["eval_accuracy"]
    # Each epoch's line comes right after its last loss line.
    assert lines.index(evals[0].string) == lines.index(losses[3].string) + 1
    assert lines.index(evals[1].string) == lines.index(losses[7].string) + 1
    assert lines[-1].startswith(f"job {job_id} succeeded")
    print(f"submit --follow of 2 mlp/digits epochs: {followed['seconds']:.1f}s")


def test_checkpoints_download_and_predict_on_the_followed_job(stack, followed, tmp_path):
    base, job_id = stack["base"], followed["job_id"]
    listing = trainhub(base, "checkpoints", job_id)
    assert listing.returncode == 0, listing.stderr
    rows = [[cell.strip() for cell in line.split("│")]
            for line in listing.stdout.splitlines()[2:]]  # below the header and its rule
    assert [row[0] for row in rows] == ["2", "1"]  # newest first
    assert "latest" in rows[0][1].split(",") and rows[1][1] in ("", "best")

    target = tmp_path / "best.pt"
    download = trainhub(base, "download", job_id, "--checkpoint", "latest", "-o", str(target))
    assert download.returncode == 0, download.stderr
    served = httpx.get(f"{base}/jobs/{job_id}/checkpoints/latest")
    assert target.read_bytes() == served.content
    digest = hashlib.sha256(served.content).hexdigest()
    assert download.stdout.strip() == (f"saved {target} (epoch 2, "
                                       f"{size(len(served.content))}, sha256 {digest})")
    assert torch.load(target, weights_only=True)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no partial file left

    from worker.data import digits_split

    x_test = digits_split()[1]
    images = []
    for i in range(2):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray((x_test[i] * 255 / 16).astype(np.uint8), "L").save(path)
        images.append(path)
    predicted = trainhub(base, "predict", *map(str, images), "--job", job_id, "--top-k", "3")
    assert predicted.returncode == 0, predicted.stderr
    out = predicted.stdout
    assert re.fullmatch(rf"job {job_id}, checkpoint best \(epoch [12]\)", out.splitlines()[0])
    for path in images:
        assert str(path) in out
    ranks = [[cell.strip() for cell in line.split("│")] for line in out.splitlines()
             if line.count("│") == 3]
    assert [r[0] for r in ranks] == ["1", "2", "3"] * 2, out
    assert all(r[1] == r[2] and 0 < float(r[3]) <= 1 for r in ranks), out  # labels are 0-9


def test_metrics_csv_of_the_followed_job(stack, followed):
    run = trainhub(stack["base"], "metrics", followed["job_id"], "--csv")
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert [r["name"] for r in rows].count("loss") == 8
    assert {"eval_accuracy", "eval_loss", "train_loss", "samples_per_second"} <= {
        r["name"] for r in rows}
    assert [int(r["step"]) for r in rows] == sorted(int(r["step"]) for r in rows)


def test_a_job_that_fails_exits_1_with_its_error(stack):
    # MNIST is not on this machine and downloads are off: the job fails with where to put it.
    run = trainhub(stack["base"], "submit", "--model", "mlp", "--dataset", "mnist",
                   "--follow")
    no_traceback(run)
    assert run.returncode == 1, run.stdout + run.stderr
    job_id = run.stdout.splitlines()[0]
    last = run.stderr.splitlines()[-1]
    assert last.startswith(f"error: job {job_id} failed: ") and "MNIST" in last, last


def test_an_uploaded_dataset_that_does_not_exist_is_refused_at_submit(stack):
    run = trainhub(stack["base"], "submit", "--model", "mlp", "--dataset", "0" * 32,
                   "--follow")
    no_traceback(run)
    assert run.returncode == 1 and run.stdout == ""
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert run.stderr.startswith("error: 422 dataset: "), run.stderr


def test_cancel_from_another_process_while_following_exits_1(stack):
    base = stack["base"]
    submitted = trainhub(base, "submit", "--model", "mlp", "--dataset", "digits", "--epochs",
                         "200", "--batch-size", "4", "--log-every", "50")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[-1]
    follower = popen_trainhub(base, "follow", job_id)
    seen: list[str] = []
    first_loss = threading.Event()

    def read():
        for line in follower.stdout:
            seen.append(line.rstrip("\n"))
            if line.startswith("["):
                first_loss.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert first_loss.wait(120), seen
        cancelled = trainhub(base, "cancel", job_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert follower.wait(timeout=120) == 1
    finally:
        if follower.poll() is None:
            follower.kill()
    reader.join(10)
    stderr = follower.stderr.read()
    assert stderr.splitlines() == [f"error: job {job_id} was cancelled"], stderr
    assert "Traceback" not in stderr
    assert seen[0].startswith(f"following job {job_id}")
    assert any(LOSS_LINE.match(line) for line in seen)


def test_a_large_upload_is_waited_for_until_the_worker_has_decoded_it(stack, tmp_path):
    # The API answers 202 and the worker decodes it; --wait (the default) waits for that.
    rng = np.random.default_rng(0)
    path = Path(tmp_path / "noise.npz")
    np.savez(path, x_train=rng.integers(0, 256, (240, 16, 16, 3), dtype=np.uint8),
             y_train=np.arange(240) % 3, x_test=rng.integers(0, 256, (30, 16, 16, 3),
                                                            dtype=np.uint8),
             y_test=np.arange(30) % 3)
    run = trainhub(stack["base"], "datasets", "upload", str(path), "--name", "noise",
                   "--wait")
    no_traceback(run)
    assert run.returncode == 0, run.stderr
    dataset_id = run.stdout.splitlines()[-1]
    assert "dataset noise is ready: 3x16x16, 3 classes, train 240, test 30" in run.stderr
    assert httpx.get(f"{stack['base']}/datasets/{dataset_id}").json()["status"] == "ready"
