"""Uploaded datasets through the API: accepted (202) and decoded by the worker, rejections
(from the headers at once, or recorded by the worker), the form's options, training on an
upload, /predict answering with its class names, deletion rules."""
from __future__ import annotations

import io
import tarfile
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.procs import shared_dir, wait_status, wait_until
from worker.data import digits_split

pytestmark = pytest.mark.slow

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def digits_zip(count: int | None = None) -> bytes:
    """The digits train split as <class>/<i>.png (single tree), optionally only `count`."""
    x_train, _, y_train, _ = digits_split()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (x, y) in enumerate(list(zip(x_train, y_train))[:count]):
            zf.writestr(f"digits/{NAMES[y]}/{i}.png", png(np.rint(x * 255 / 16).astype(np.uint8)))
    return buf.getvalue()


def upload(base: str, data: bytes, filename: str, **fields) -> httpx.Response:
    return httpx.post(f"{base}/datasets", files={"file": (filename, data)},
                      data={k: str(v) for k, v in fields.items()}, timeout=300)


def wait_dataset(base: str, dataset_id: str, timeout: float = 300) -> dict:
    return wait_until(lambda: (d := httpx.get(f"{base}/datasets/{dataset_id}").json())
                      ["status"] != "processing" and d, timeout=timeout)


def cifar_slice(per_class_train: int, per_class_test: int) -> bytes:
    """A tar.gz of the first images of each class from the shared CIFAR-10 archive."""
    wanted: dict[tuple[str, str], int] = {}
    out = io.BytesIO()
    with tarfile.open(shared_dir() / "datasets" / "cifar10-jpg.tar.gz") as src, \
            tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3:
                continue
            key = (parts[0], parts[1])
            limit = per_class_train if parts[0] == "train" else per_class_test
            if wanted.get(key, 0) >= limit:
                continue
            wanted[key] = wanted.get(key, 0) + 1
            dst.addfile(member, src.extractfile(member))
    return out.getvalue()


def test_a_zip_is_accepted_then_made_ready_by_the_worker_and_trains(stack):
    base = stack["base"]
    data = digits_zip(400)
    resp = upload(base, data, "digits.zip", test_fraction=0.25, name="my-digits")
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert resp.headers["location"] == f"/datasets/{accepted['id']}"
    assert accepted["status"] == "processing" and accepted["name"] == "my-digits"
    ds = wait_dataset(base, accepted["id"])
    assert ds["status"] == "ready" and ds["name"] == "my-digits" and ds["layout"] == "single"
    assert ds["shape"] == [1, 8, 8] and ds["classes"] == sorted(NAMES)
    train, test = ds["counts"]["train"], ds["counts"]["test"]
    assert sum(train.values()) + sum(test.values()) == 400
    assert all(test[c] >= 1 for c in NAMES)
    listed = {d["id"]: d for d in httpx.get(f"{base}/datasets").json()["datasets"]}
    assert listed[ds["id"]]["status"] == "ready" and "digits" in listed

    job = httpx.post(f"{base}/jobs", json={"model": "mlp", "dataset": ds["id"],
                                           "hyperparameters": {"epochs": 3, "batch_size": 16,
                                                               "optimizer": "adam", "lr": 0.003,
                                                               "log_every": 5}}).json()
    assert job["progress"]["total_steps"] == 3 * -(-sum(train.values()) // 16)
    done = wait_status(base, job["id"])
    assert done["status"] == "succeeded", done
    x_train, _, y_train, _ = digits_split()
    files = [("image", (f"{i}.png", png(np.rint(x_train[i] * 255 / 16).astype(np.uint8)),
                        "image/png")) for i in range(5)]
    preds = httpx.post(f"{base}/predict", data={"job_id": job["id"], "top_k": "1"},
                       files=files).json()["predictions"]
    assert {p[0]["label"] for p in preds} <= set(NAMES)  # the upload's class names
    assert sum(p[0]["label"] == NAMES[y] for p, y in zip(preds, y_train[:5])) >= 4

    # In use by a running job: refused; afterwards: gone with its files.
    long = httpx.post(f"{base}/jobs", json={"model": "lenet", "dataset": ds["id"],
                                            "hyperparameters": {"epochs": 500}}).json()
    wait_status(base, long["id"], {"running"}, timeout=120)
    resp = httpx.delete(f"{base}/datasets/{ds['id']}")
    assert resp.status_code == 409 and long["id"] in resp.json()["detail"]
    httpx.post(f"{base}/jobs/{long['id']}/cancel")
    wait_status(base, long["id"])
    assert httpx.delete(f"{base}/datasets/{ds['id']}").status_code == 204
    assert httpx.get(f"{base}/datasets/{ds['id']}").status_code == 404
    assert not (stack["tmp"] / "data" / "artifacts" / "datasets" / ds["id"]).exists()
    resp = httpx.post(f"{base}/jobs", json={"model": "mlp", "dataset": ds["id"]})
    assert resp.status_code == 422 and resp.json()["detail"][0]["field"] == "dataset"


def test_the_worker_reports_its_progress_and_finishes_at_every_image(stack):
    base = stack["base"]
    data = digits_zip()
    resp = upload(base, data, "digits.zip")
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "processing"
    ds = wait_dataset(base, resp.json()["id"])
    assert ds["status"] == "ready", ds
    assert ds["progress"] == {"done": 1437, "total": 1437}
    assert sum(ds["counts"]["train"].values()) + sum(ds["counts"]["test"].values()) == 1437
    stack["worker"].wait_for_log(f"dataset {ds['id']}: ready", timeout=10)


def test_cifar_slice_trains_and_predicts_cifar_names(stack):
    base = stack["base"]
    data = cifar_slice(per_class_train=60, per_class_test=10)
    resp = upload(base, data, "cifar-slice.tar.gz")
    assert resp.status_code == 202, resp.text
    ds = wait_dataset(base, resp.json()["id"])
    assert ds["status"] == "ready", ds
    assert ds["layout"] == "split" and ds["shape"] == [3, 32, 32]
    assert ds["counts"]["train"] == {c: 60 for c in ds["classes"]}
    assert ds["counts"]["test"] == {c: 10 for c in ds["classes"]}
    assert "cat" in ds["classes"] and len(ds["classes"]) == 10
    job = httpx.post(f"{base}/jobs", json={"model": "lenet", "dataset": ds["id"],
                                           "hyperparameters": {"epochs": 1, "batch_size": 16,
                                                               "log_every": 10}}).json()
    assert wait_status(base, job["id"])["status"] == "succeeded"
    with tarfile.open(shared_dir() / "datasets" / "cifar10-jpg.tar.gz") as archive:
        member = next(m for m in archive if m.isfile() and m.name.startswith("test/"))
        jpeg = archive.extractfile(member).read()
    body = httpx.post(f"{base}/predict", data={"job_id": job["id"], "top_k": "10"},
                      files=[("image", ("x.jpg", jpeg, "image/jpeg"))]).json()
    assert {p["label"] for p in body["predictions"][0]} == set(ds["classes"])


def test_rejections_name_the_problem(stack):
    base = stack["base"]
    one_class = io.BytesIO()
    with zipfile.ZipFile(one_class, "w") as zf:
        for i in range(4):
            zf.writestr(f"cat/{i}.png", png(np.zeros((8, 8), np.uint8)))
    resp = upload(base, one_class.getvalue(), "one.zip")
    assert resp.status_code == 422 and "at least 2 classes" in resp.json()["detail"][0]["msg"]

    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("a/0.png", png(np.zeros((8, 8), np.uint8)))
        zf.writestr("../../evil.png", b"x")
    resp = upload(base, evil.getvalue(), "evil.zip")
    assert resp.status_code == 422 and "outside the archive" in resp.json()["detail"][0]["msg"]

    resp = upload(base, b"just some text", "notes.txt")
    assert resp.status_code == 422 and ".tar" in resp.json()["detail"][0]["msg"]

    # Mixed sizes show only when the images are decoded: the worker records the failure.
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    mixed = io.BytesIO()
    with zipfile.ZipFile(mixed, "w") as zf:
        for i in range(40):
            zf.writestr(f"a/{i}.png", png(noisy))
            zf.writestr(f"b/{i}.png", png(noisy[:32]))
    resp = upload(base, mixed.getvalue(), "mixed.zip")
    assert resp.status_code == 202
    ds = wait_dataset(base, resp.json()["id"])
    assert ds["status"] == "failed" and "mixed image sizes" in ds["error"]
    resp = httpx.post(f"{base}/jobs", json={"model": "mlp", "dataset": ds["id"]})
    assert resp.status_code == 422 and "failed" in resp.json()["detail"][0]["msg"]
    assert httpx.delete(f"{base}/datasets/{ds['id']}").status_code == 204

    too_big = b"\0" * (50 * 1024 * 1024 + 1)
    resp = upload(base, too_big, "huge.tar")
    assert resp.status_code == 413

    assert upload(base, digits_zip(50), "d.zip", test_fraction=0.9).status_code == 422
    assert upload(base, digits_zip(50), "d.zip", resize="big").status_code == 422
    assert httpx.delete(f"{base}/datasets/digits").status_code == 409
    assert httpx.delete(f"{base}/datasets/{'0' * 32}").status_code == 404
    assert httpx.get(f"{base}/datasets/nope").status_code == 404


def test_npz_upload(stack):
    base = stack["base"]
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8),
             y_train=np.arange(60) % 3, x_test=rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8),
             y_test=np.arange(12) % 3, classes=np.array(["red", "green", "blue"]))
    resp = upload(base, buf.getvalue(), "colors.npz")
    assert resp.status_code == 202, resp.text
    ds = wait_dataset(base, resp.json()["id"])
    assert ds["layout"] == "npz" and ds["shape"] == [3, 16, 16]
    assert ds["classes"] == ["red", "green", "blue"]
    assert ds["counts"] == {"train": {"red": 20, "green": 20, "blue": 20},
                            "test": {"red": 4, "green": 4, "blue": 4}}


@pytest.mark.parametrize("mode, channels", [("RGB", 1), ("L", 3)])
def test_channels_in_the_form_convert_every_image(stack, mode, channels):
    # The form's fields are text: channels=1 and channels=3 must reach the API as numbers.
    base = stack["base"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(8):
            image = Image.new(mode, (6, 6), 30 * i if mode == "L" else (30 * i, 0, 0))
            out = io.BytesIO()
            image.save(out, "PNG")
            zf.writestr(f"{'ab'[i % 2]}/{i}.png", out.getvalue())
    resp = upload(base, archive.getvalue(), "six.zip", channels=channels, test_fraction=0.25)
    assert resp.status_code == 202, resp.text
    assert resp.json()["options"]["channels"] == channels
    ds = wait_dataset(base, resp.json()["id"])
    assert ds["status"] == "ready", ds
    assert ds["shape"] == [channels, 6, 6]

    resp = upload(base, archive.getvalue(), "six.zip", channels=2)
    assert resp.status_code == 422
    problem, = resp.json()["detail"]
    assert problem["field"] == "channels" and problem["msg"] == "Input should be 1 or 3"
