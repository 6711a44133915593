"""Acceptance (#11, part 3): artifacts in an S3-compatible bucket. The API and two workers
run with data folders of their own, sharing nothing but Postgres, Redis and a bucket on a
real S3-protocol server (moto's, in its own process): train, list and download checkpoints,
/predict, an upload processed by a worker, and a fine-tune with init_from on the worker
that did not train the first job."""
from __future__ import annotations

import hashlib
import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import running_stack
from tests.procs import wait_status, wait_until
from tests.s3server import s3_env, s3_server  # noqa: F401 (a fixture)
from worker.data import digits_split

pytestmark = pytest.mark.slow

PREFIX = "deploy-1"
WORKERS = ("s3-w1@test", "s3-w2@test")


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory, s3_server):  # noqa: F811
    bucket = s3_server.new_bucket("trainhub-e2e")
    tmp = tmp_path_factory.mktemp("object-store")
    with running_stack(tmp, WORKERS[0], extra_workers=WORKERS[1:], own_data_dirs=True,
                       **s3_env(s3_server, f"s3://{bucket}/{PREFIX}")) as running:
        yield {**running, "bucket": bucket, "s3": s3_server}


def submit(base: str, body: dict) -> dict:
    resp = httpx.post(f"{base}/jobs", json=body, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()


def digits_npz() -> bytes:
    """digits as an .npz upload, its train split three times over, for a worker to process."""
    x_train, x_test, y_train, y_test = digits_split()
    scale = lambda x: np.rint(x.reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)  # noqa: E731
    buf = io.BytesIO()
    np.savez(buf, x_train=np.concatenate([scale(x_train)] * 3),
             y_train=np.concatenate([y_train] * 3), x_test=scale(x_test), y_test=y_test,
             classes=np.array([str(i) for i in range(10)]))
    assert len(buf.getvalue()) > 200_000
    return buf.getvalue()


def digit_pngs(count: int) -> tuple[list[bytes], list[int]]:
    _, x_test, _, y_test = digits_split()
    images = []
    for x in x_test[:count]:
        buf = io.BytesIO()
        Image.fromarray(np.rint(x.reshape(8, 8) * (255 / 16)).astype(np.uint8), "L").save(
            buf, format="PNG")
        images.append(buf.getvalue())
    return images, [int(y) for y in y_test[:count]]


def predict_accuracy(base: str, job_id: str, checkpoint: str = "best") -> float:
    images, labels = digit_pngs(40)
    resp = httpx.post(f"{base}/predict", data={"job_id": job_id, "checkpoint": checkpoint,
                                               "top_k": "1"},
                      files=[("image", (f"{i}.png", png)) for i, png in enumerate(images)],
                      timeout=60)
    assert resp.status_code == 200, resp.text
    answers = [p[0]["label"] for p in resp.json()["predictions"]]
    return sum(a == str(y) for a, y in zip(answers, labels)) / len(labels)


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_train_download_predict_and_fine_tune_with_nothing_shared_but_the_bucket(s3_stack):
    base, s3, bucket = s3_stack["base"], s3_stack["s3"], s3_stack["bucket"]
    started = time.monotonic()

    # A job on digits and an upload for a worker to process, at the same time.
    first = submit(base, {"model": "mlp", "dataset": "digits", "device": "cpu",
                          "hyperparameters": {"epochs": 2, "batch_size": 32,
                                              "optimizer": "adam", "lr": 0.01,
                                              "log_every": 20}})
    resp = httpx.post(f"{base}/datasets", files={"file": ("digits.npz", digits_npz())},
                      timeout=60)
    assert resp.status_code == 202, resp.text
    dataset_id = resp.json()["id"]
    done = wait_status(base, first["id"], timeout=120)
    assert done["status"] == "succeeded", done
    dataset = wait_until(lambda: (d := httpx.get(f"{base}/datasets/{dataset_id}").json())
                         ["status"] != "processing" and d, timeout=120)
    assert dataset["status"] == "ready", dataset
    assert dataset["shape"] == [1, 8, 8] and dataset["num_classes"] == 10

    # The checkpoints are listed and downloaded through the API, from the bucket.
    listing = httpx.get(f"{base}/jobs/{first['id']}/checkpoints").json()
    assert [c["epoch"] for c in listing["checkpoints"]] == [1, 2]
    for entry in listing["checkpoints"]:
        resp = httpx.get(f"{base}/jobs/{first['id']}/checkpoints/{entry['epoch']}", timeout=60)
        assert resp.status_code == 200
        assert len(resp.content) == entry["size_bytes"] == int(resp.headers["content-length"])
        assert hashlib.sha256(resp.content).hexdigest() == entry["sha256"]
        key = f"{PREFIX}/jobs/{first['id']}/checkpoints/epoch-{entry['epoch']:04d}.pt"
        in_bucket = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert in_bucket == resp.content
    assert predict_accuracy(base, first["id"]) >= 0.7

    # Fine-tune on the upload, on the other worker: the one that trained stops first.
    s3_stack["workers"][done["worker"]].stop()
    second = submit(base, {"model": "mlp", "dataset": dataset_id, "device": "cpu",
                           "init_from": {"job_id": first["id"], "checkpoint": "best"},
                           "hyperparameters": {"epochs": 1, "batch_size": 64,
                                               "log_every": 20}})
    tuned = wait_status(base, second["id"], timeout=120)
    assert tuned["status"] == "succeeded", tuned
    assert tuned["worker"] != done["worker"]
    logs = httpx.get(f"{base}/jobs/{second['id']}/logs").json()["lines"]
    assert any(f"initialised from job {first['id']} epoch" in line["message"] for line in logs)
    assert predict_accuracy(base, second["id"], "latest") >= 0.7

    # Every artifact is in the bucket under the prefix ...
    keys = s3.keys(bucket)
    assert all(k.startswith(f"{PREFIX}/") for k in keys), keys
    for job in (first, second):
        assert any(k.startswith(f"{PREFIX}/jobs/{job['id']}/tensorboard/events.out.tfevents.")
                   for k in keys), keys
    assert f"{PREFIX}/jobs/{second['id']}/checkpoints/epoch-0001.pt" in keys
    assert f"{PREFIX}/datasets/{dataset_id}/tensors.pt" in keys
    assert f"{PREFIX}/datasets/{dataset_id}/upload" not in keys  # deleted once processed
    # ... and none on any process's disk: no artifacts/, no leftover temporary file. The
    # workers keep only their own TensorBoard folders (and digits' tensor cache).
    data_dirs = s3_stack["data_dirs"]
    api_files = files_under(data_dirs["api"])
    assert not [f for f in api_files if f.endswith(".pt") or f.startswith(("artifacts", "tmp/"))]
    for name in WORKERS:
        worker_files = files_under(data_dirs[name])
        assert not [f for f in worker_files if f.startswith(("artifacts", "tmp/"))], worker_files
    for job, worker in ((first, done["worker"]), (second, tuned["worker"])):
        runs = {f.split("/")[1] for f in files_under(data_dirs[worker])
                if f.startswith("tensorboard/")}
        assert runs == {f"{job['name']}-{job['id'][:8]}"}, runs

    # Deleting a job deletes its objects, and only its.
    assert httpx.delete(f"{base}/jobs/{first['id']}").status_code == 204
    keys = s3.keys(bucket)
    assert not [k for k in keys if k.startswith(f"{PREFIX}/jobs/{first['id']}/")]
    assert f"{PREFIX}/jobs/{second['id']}/checkpoints/epoch-0001.pt" in keys
    # The API cannot see a worker's disk: the worker's reaper pass removes the run there.
    assert httpx.delete(f"{base}/jobs/{second['id']}").status_code == 204
    assert not [k for k in s3.keys(bucket) if k.startswith(f"{PREFIX}/jobs/{second['id']}/")]
    tensorboard = data_dirs[tuned["worker"]] / "tensorboard"
    wait_until(lambda: not any(tensorboard.iterdir()), timeout=60)
    print(f"object store acceptance: {time.monotonic() - started:.1f}s after start-up")
