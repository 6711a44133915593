"""Checkpoints, downloads, fine-tuning, /predict and DELETE against the running stack."""
from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
import tarfile
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.procs import REPO, shared_dir, wait_status
from worker.data import digits_split

pytestmark = pytest.mark.slow

DIGITS_ADAM = {"model": "lenet", "dataset": "digits",
               "hyperparameters": {"epochs": 3, "batch_size": 4, "optimizer": "adam",
                                   "lr": 0.001, "log_every": 100}}


def submit(base: str, body: dict) -> dict:
    resp = httpx.post(f"{base}/jobs", json=body, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digits_job(stack):
    job = submit(stack["base"], DIGITS_ADAM)
    done = wait_status(stack["base"], job["id"], timeout=240)
    assert done["status"] == "succeeded", done
    return done


@pytest.fixture(scope="module")
def cifar_shaped_job(stack):
    job = submit(stack["base"], {"model": "lenet", "dataset": "fake",
                                 "hyperparameters": {"epochs": 1, "batch_size": 64,
                                                     "log_every": 5}})
    done = wait_status(stack["base"], job["id"], timeout=240)
    assert done["status"] == "succeeded", done
    return done


@pytest.fixture(scope="module")
def digit_pngs():
    _, x_test, _, y_test = digits_split()
    images = [png_bytes(np.rint(x * (255 / 16)).astype(np.uint8)) for x in x_test[:50]]
    return images, [int(y) for y in y_test[:50]]


def post_predict(base, job_id, files, **fields):
    data = {"job_id": job_id, **{k: str(v) for k, v in fields.items()}}
    return httpx.post(f"{base}/predict", data=data, files=files, timeout=60)


def test_checkpoint_per_epoch_listed_with_size_and_hash(stack, digits_job):
    base, job_id = stack["base"], digits_job["id"]
    listing = httpx.get(f"{base}/jobs/{job_id}/checkpoints").json()
    assert [c["epoch"] for c in listing["checkpoints"]] == [1, 2, 3]
    assert listing["latest"] == 3 and listing["best_metric"] == "eval_accuracy"
    best_epoch = max(listing["checkpoints"],
                     key=lambda c: (c["metrics"]["eval_accuracy"], -c["epoch"]))["epoch"]
    assert listing["best"] == best_epoch
    for entry in listing["checkpoints"]:
        resp = httpx.get(f"{base}/jobs/{job_id}/checkpoints/{entry['epoch']}")
        assert resp.status_code == 200
        assert len(resp.content) == entry["size_bytes"]
        assert hashlib.sha256(resp.content).hexdigest() == entry["sha256"]
        assert {"eval_accuracy", "train_loss", "lr"} <= set(entry["metrics"])
    latest = httpx.get(f"{base}/jobs/{job_id}/checkpoints/latest")
    assert latest.headers["x-checkpoint-epoch"] == "3"
    for ref, code in (("7", 404), ("..%2F..%2Fetc%2Fpasswd", 404), ("first", 404)):
        assert httpx.get(f"{base}/jobs/{job_id}/checkpoints/{ref}").status_code == code


def test_predict_digits_and_best_checkpoint_reproduces_offline(stack, digits_job, digit_pngs,
                                                               tmp_path):
    base, job_id = stack["base"], digits_job["id"]
    images, labels = digit_pngs
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    resp = post_predict(base, job_id, files, top_k=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["job_id"] == job_id and body["checkpoint"]["ref"] == "best"
    predictions = body["predictions"]
    assert len(predictions) == 50
    for ranked in predictions:
        probs = [p["probability"] for p in ranked]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-5)
        assert all(p["label"] == str(p["index"]) for p in ranked)
    top1 = [ranked[0]["index"] for ranked in predictions]
    accuracy = np.mean([p == y for p, y in zip(top1, labels)])
    assert accuracy >= 0.9, accuracy

    # The downloaded best checkpoint, in a fresh Python, answers the same.
    ckpt_path = tmp_path / "best.pt"
    ckpt_path.write_bytes(httpx.get(f"{base}/jobs/{job_id}/checkpoints/best").content)
    for i, data in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(data)
    script = """
import json, sys, torch
from PIL import Image
import models
blob = torch.load(sys.argv[1], weights_only=True)
arch, norm = blob["architecture"], blob["normalization"]
model = models.build(arch["name"], tuple(arch["input_shape"]), arch["num_classes"])
model.load_state_dict(blob["model_state"]); model.eval()
x = torch.stack([torch.tensor(list(Image.open(f"{sys.argv[2]}/{i}.png").convert("L").getdata()),
                 dtype=torch.uint8).view(1, 8, 8) for i in range(50)])
x = (x.float() / 255 - torch.tensor(norm["mean"]).view(1, -1, 1, 1)) / torch.tensor(norm["std"]).view(1, -1, 1, 1)
with torch.no_grad():
    probs = torch.softmax(model(x), 1)
print(json.dumps({"top1": probs.argmax(1).tolist(), "p": probs.max(1).values.tolist(),
                  "classes": blob["classes"]}))
"""
    out = subprocess.run([sys.executable, "-c", script, str(ckpt_path), str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    offline = json.loads(out.stdout)
    assert offline["top1"] == top1
    assert offline["p"] == pytest.approx([r[0]["probability"] for r in predictions], abs=1e-5)
    assert offline["classes"] == [str(i) for i in range(10)]


def test_cifar_jpeg_and_large_grayscale_png_predict(stack, cifar_shaped_job):
    base, job_id = stack["base"], cifar_shaped_job["id"]
    with tarfile.open(shared_dir() / "datasets" / "cifar10-jpg.tar.gz") as archive:
        member = next(m for m in archive if m.isfile() and m.name.startswith("test/"))
        jpeg = archive.extractfile(member).read()
    assert Image.open(io.BytesIO(jpeg)).size == (32, 32)
    # A 12-megapixel grayscale "photo": smooth shading plus sensor-like noise.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:3000, 0:4000]
    shade = 128 + 60 * np.sin(xx / 300.0) * np.cos(yy / 200.0) + rng.normal(0, 4, (3000, 4000))
    photo = png_bytes(np.clip(shade, 0, 255).astype(np.uint8))
    assert Image.open(io.BytesIO(photo)).size == (4000, 3000)
    files = [("image", ("cifar.jpg", jpeg, "image/jpeg")), ("image", ("photo.png", photo, "image/png"))]
    resp = post_predict(base, job_id, files, top_k=3)
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    assert [len(p) for p in predictions] == [3, 3]
    assert predictions[0][0]["label"].startswith("class_")


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG whose header claims width x height; decoding it would need 400 MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def test_predict_bad_inputs(stack, digits_job, digit_pngs):
    base, job_id = stack["base"], digits_job["id"]
    good = [("image", ("d.png", digit_pngs[0][0], "image/png"))]

    resp = post_predict(base, job_id, [("image", ("notes.txt", b"hello, not an image", "text/plain"))])
    assert resp.status_code == 415 and "not an image" in resp.json()["detail"]
    resp = post_predict(base, job_id, [("image", ("cut.png", digit_pngs[0][0][:40], "image/png"))])
    assert resp.status_code == 415

    big = b"\x89PNG" + b"\x00" * (25 * 1024 * 1024 + 1)  # the default limit is 25 MiB
    resp = post_predict(base, job_id, [("image", ("big.png", big, "image/png"))])
    assert resp.status_code == 413 and "limit" in resp.json()["detail"]

    resp = post_predict(base, job_id, [("image", ("bomb.png", bomb_png(), "image/png"))])
    assert resp.status_code == 413 and "400000000 pixels" in resp.json()["detail"]
    # Under Pillow's own bomb threshold but over trainhub's pixel limit (64 M by default).
    resp = post_predict(base, job_id, [("image", ("wide.png", bomb_png(10000, 8000), "image/png"))])
    assert resp.status_code == 413 and "10000x8000" in resp.json()["detail"]

    assert post_predict(base, "0" * 32, good).status_code == 404
    assert post_predict(base, "../../etc", good).status_code == 404
    for top_k in (0, 11):
        resp = post_predict(base, job_id, good, top_k=top_k)
        assert resp.status_code == 422 and resp.json()["detail"][0]["field"] == "top_k"
    resp = post_predict(base, job_id, good, checkpoint="../x")
    assert resp.status_code == 422 and resp.json()["detail"][0]["field"] == "checkpoint"
    assert post_predict(base, job_id, good, checkpoint="42").status_code == 404
    resp = httpx.post(f"{base}/predict", data={"job_id": job_id}, timeout=30)
    assert resp.status_code == 422 and resp.json()["detail"][0]["field"] == "image"

    failed = submit(base, {"model": "lenet", "dataset": "cifar10"})  # no files: fails at once
    assert wait_status(base, failed["id"])["status"] == "failed"
    resp = post_predict(base, failed["id"], good)
    assert resp.status_code == 409 and "no checkpoint" in resp.json()["detail"]


def test_fine_tune_from_best_and_architecture_checks(stack, digits_job):
    base, source = stack["base"], digits_job["id"]
    tuned = submit(base, {**DIGITS_ADAM, "hyperparameters": {"epochs": 1, "log_every": 100,
                                                             "optimizer": "adam", "lr": 0.0005},
                          "init_from": {"job_id": source, "checkpoint": "best"}})
    done = wait_status(base, tuned["id"], timeout=240)
    assert done["status"] == "succeeded", done
    # Starting from trained weights, one epoch already scores like the source's best.
    assert done["metrics"]["eval_accuracy"] >= 0.9
    first_loss = httpx.get(f"{base}/jobs/{tuned['id']}/metrics",
                           params={"name": "loss", "limit": 1}).json()["metrics"][0]["value"]
    assert first_loss < 1.0  # a fresh LeNet starts near ln(10) = 2.3

    cases = [
        ({"model": "mlp", "dataset": "digits"}, "init_from", "model differs"),
        ({"model": "lenet", "dataset": "fake"}, "init_from", "input shape"),
        ({"model": "lenet", "dataset": "digits", "init_from": {"job_id": "0" * 32}},
         "init_from.job_id", "no job"),
        ({"model": "lenet", "dataset": "digits",
          "init_from": {"job_id": source, "checkpoint": "99"}}, "init_from.checkpoint", "99"),
        ({"model": "lenet", "dataset": "digits",
          "init_from": {"job_id": source, "checkpoint": "../../x"}}, "init_from.checkpoint", ""),
    ]
    for body, field, words in cases:
        body = {"init_from": {"job_id": source}, **body}
        resp = httpx.post(f"{base}/jobs", json=body)
        assert resp.status_code == 422, (body, resp.text)
        error = resp.json()["detail"][0]
        assert error["field"] == field and words in error["msg"], error


def test_delete_finished_job_removes_everything_and_running_is_409(stack):
    base = stack["base"]
    job = submit(base, {"model": "mlp", "dataset": "digits",
                        "hyperparameters": {"epochs": 2, "batch_size": 64, "log_every": 5}})
    assert wait_status(base, job["id"])["status"] == "succeeded"
    artifacts = stack["tmp"] / "data" / "artifacts" / "jobs" / job["id"]
    assert len(list((artifacts / "checkpoints").glob("*.pt"))) == 2
    # The TensorBoard run is named after the job (mlp-digits); this API shares the data dir.
    run = stack["tmp"] / "data" / "tensorboard" / f"mlp-digits-{job['id'][:8]}"
    assert any(run.glob("events.out.tfevents.*"))

    long = submit(base, {"model": "lenet", "dataset": "fake",
                         "hyperparameters": {"epochs": 500, "log_every": 25}})
    wait_status(base, long["id"], {"running"}, timeout=120)
    resp = httpx.delete(f"{base}/jobs/{long['id']}")
    assert resp.status_code == 409 and "running" in resp.json()["detail"]
    httpx.post(f"{base}/jobs/{long['id']}/cancel")
    assert wait_status(base, long["id"])["status"] == "cancelled"

    assert httpx.delete(f"{base}/jobs/{job['id']}").status_code == 204
    assert httpx.get(f"{base}/jobs/{job['id']}").status_code == 404
    assert httpx.get(f"{base}/jobs/{job['id']}/metrics").status_code == 404
    assert not artifacts.exists() and not run.exists()
    import psycopg

    with psycopg.connect(stack["db_url"]) as conn:
        counts = [conn.execute(f"SELECT count(*) FROM {t} WHERE job_id = %s", (job["id"],))
                  .fetchone()[0] for t in ("metric_points", "checkpoints")]
    assert counts == [0, 0]
    assert httpx.delete(f"{base}/jobs/{job['id']}").status_code == 404
    # The cancelled job kept its checkpoints until deleted too.
    assert httpx.delete(f"{base}/jobs/{long['id']}").status_code == 204


def test_retention_keeps_newest_and_best(stack):
    base = stack["base"]
    job = submit(base, {"model": "mlp", "dataset": "digits",
                        "hyperparameters": {"epochs": 6, "batch_size": 128, "log_every": 5,
                                            "optimizer": "adam", "lr": 0.01}})
    assert wait_status(base, job["id"])["status"] == "succeeded"
    listing = httpx.get(f"{base}/jobs/{job['id']}/checkpoints").json()
    epochs = [c["epoch"] for c in listing["checkpoints"]]
    assert epochs[-3:] == [4, 5, 6]
    assert set(epochs) <= {listing["best"], 4, 5, 6} and listing["best"] in epochs
    folder = stack["tmp"] / "data" / "artifacts" / "jobs" / job["id"] / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.pt")) == [f"epoch-{e:04d}.pt" for e in epochs]
