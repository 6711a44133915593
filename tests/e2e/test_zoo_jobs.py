"""Torchvision models trained as users train them: real API and Celery worker, HTTP and broker."""
from __future__ import annotations

import io
import tarfile
import time

import httpx
import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from tests.e2e.test_datasets import cifar_slice, upload, wait_dataset
from tests.procs import TERMINAL

pytestmark = pytest.mark.slow

# model: (the cut it trains on, batch size). swin_t trains on at most 64 images (its slow
# tier): 5 a class, 1 a class to evaluate. efficientnet_b0 at batch 4: the epoch's 75 steps
# bring its BatchNorm running statistics (momentum 0.1) near the data's, so each image gets
# probabilities of its own; after 19 steps they still hold most of their initial 0 and 1 and
# every image gets the same. mobilenet_v3_small's BatchNorm momentum is 0.01: after an epoch
# of a few hundred images (batch 2 to 16 tried) its evaluation gives every image the same
# probabilities (plain torchvision too), so for it the exports are checked on the class
# probabilities of its trained head alone.
ZOO = {"torchvision.mobilenet_v3_small": ("cut", 16), "torchvision.efficientnet_b0": ("cut", 4),
       "torchvision.swin_t": ("tiny", 16)}
SAME_FOR_EVERY_IMAGE = {"torchvision.mobilenet_v3_small"}
PREDICT_IMAGES = 8


def ready_dataset(base: str, data: bytes, name: str) -> dict:
    resp = upload(base, data, f"{name}.tar.gz", name=name)
    assert resp.status_code == 202, resp.text
    ds = wait_dataset(base, resp.json()["id"])
    assert ds["status"] == "ready" and ds["shape"] == [3, 32, 32], ds
    return ds


@pytest.fixture(scope="module")
def zoo_jobs(stack):
    """The CIFAR-10 cuts uploaded, then the three jobs submitted at once (the worker takes
    them in turn): {model: job id}, and the cut's first test JPEGs for /predict."""
    base = stack["base"]
    cut = cifar_slice(per_class_train=30, per_class_test=5)
    datasets = {"cut": ready_dataset(base, cut, "cifar-cut"),
                "tiny": ready_dataset(base, cifar_slice(per_class_train=5, per_class_test=1),
                                      "cifar-tiny")}
    assert sum(datasets["cut"]["counts"]["train"].values()) == 300
    assert sum(datasets["tiny"]["counts"]["train"].values()) + \
        sum(datasets["tiny"]["counts"]["test"].values()) <= 64
    ids = {}
    for model, (cut_name, batch_size) in ZOO.items():
        resp = httpx.post(f"{base}/jobs", timeout=30, json={
            "model": model, "dataset": datasets[cut_name]["id"], "device": "cpu",
            "hyperparameters": {"epochs": 1, "batch_size": batch_size, "optimizer": "adam",
                                "lr": 0.001, "log_every": 5}})
        assert resp.status_code == 201, resp.text
        ids[model] = resp.json()["id"]
    with tarfile.open(fileobj=io.BytesIO(cut)) as archive:
        jpegs = [archive.extractfile(m).read() for m in archive
                 if m.isfile() and m.name.startswith("test/")][::5][:PREDICT_IMAGES]
    return ids, jpegs


def wait_printing(base: str, job_id: str, model: str, timeout: float = 900) -> dict:
    """The job once it ends, its progress printed as it changes."""
    start, seen = time.monotonic(), None
    while time.monotonic() - start < timeout:
        job = httpx.get(f"{base}/jobs/{job_id}", timeout=10).json()
        now = (job["status"], job["progress"].get("step"))
        if now != seen:
            print(f"{model}: {job['status']} {job['progress']} at "
                  f"{time.monotonic() - start:.0f}s", flush=True)
            seen = now
        if job["status"] in TERMINAL:
            return job
        time.sleep(1)
    raise TimeoutError(f"{model} ({job_id}) still {seen} after {timeout}s")


def predicted(base: str, job_id: str, jpegs: list[bytes]) -> np.ndarray:
    resp = httpx.post(f"{base}/predict", data={"job_id": job_id, "top_k": "10"},
                      files=[("image", (f"{i}.jpg", j, "image/jpeg"))
                             for i, j in enumerate(jpegs)], timeout=300)
    assert resp.status_code == 200, resp.text
    out = np.zeros((len(jpegs), 10), dtype=np.float64)
    for row, ranked in enumerate(resp.json()["predictions"]):
        for p in ranked:
            out[row, p["index"]] = p["probability"]
    return out


def exported(base: str, job_id: str, fmt: str) -> bytes:
    resp = httpx.get(f"{base}/jobs/{job_id}/export",
                     params={"checkpoint": "best", "format": fmt}, timeout=900)
    assert resp.status_code == 200, resp.text
    return resp.content


@pytest.mark.parametrize("model", list(ZOO))
def test_a_zoo_model_trains_checkpoints_predicts_and_exports_as_it_predicts(
        stack, zoo_jobs, model, tmp_path):
    base, (ids, jpegs) = stack["base"], zoo_jobs
    job = wait_printing(base, ids[model], model)
    assert job["status"] == "succeeded", job
    listing = httpx.get(f"{base}/jobs/{job['id']}/checkpoints", timeout=10).json()
    assert [c["epoch"] for c in listing["checkpoints"]] == [1]

    expected = predicted(base, job["id"], jpegs)
    np.testing.assert_allclose(expected.sum(axis=1), 1, atol=1e-5)
    # The images /predict converts the JPEGs to: uint8 (N, 3, 32, 32).
    images = np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")).transpose(2, 0, 1)
                       for j in jpegs])
    spread = expected.std(axis=0).max()
    if model in SAME_FOR_EVERY_IMAGE:
        assert np.ptp(expected, axis=1).min() > 1e-4  # the head's classes differ
    else:
        assert spread > 1e-3  # each image its own probabilities: a comparison that can fail

    (tmp_path / "model.pt2").write_bytes(exported(base, job["id"], "pt2"))
    with torch.inference_mode():
        got = torch.export.load(tmp_path / "model.pt2").module()(torch.from_numpy(images))
    pt2_diff = np.abs(got.double().numpy() - expected).max()
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-5)

    session = onnxruntime.InferenceSession(exported(base, job["id"], "onnx"),
                                           providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"images": images})[0]
    onnx_diff = np.abs(got - expected).max()
    print(f"{model}: pt2 vs /predict {pt2_diff:.3g}, onnx vs /predict {onnx_diff:.3g}, "
          f"probabilities' spread over images {spread:.3g}")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
