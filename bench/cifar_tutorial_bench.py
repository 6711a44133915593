"""The PyTorch CIFAR-10 tutorial, end to end through the API, on real CIFAR-10.

Uploads ../shared/datasets/cifar10-jpg.tar.gz (50,000 train and 10,000 test JPEGs) with
POST /datasets, waits for it to be `ready` with 5,000/1,000 images per class, then trains
the tutorial's job (lenet, 2 epochs, batch 4, sgd lr 0.001 momentum 0.9, log_every 2000)
and checks: exactly 6 `loss` points per epoch, eval_accuracy >= 0.50 (the tutorial reports
about 54%), /predict answering with CIFAR-10's class names.
"""
from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path

import httpx
from predict_bench import Server

TITLE = "CIFAR-10 tutorial through the API (upload, train, predict)"
ROOT = Path(__file__).resolve().parents[1]
JOB = {"model": "lenet", "hyperparameters": {"epochs": 2, "batch_size": 4, "optimizer": "sgd",
                                             "lr": 0.001, "momentum": 0.9, "log_every": 2000}}
MIN_ACCURACY = 0.50


def add_arguments(parser) -> None:
    parser.add_argument("--cifar-archive", type=Path, default=Path(os.environ.get(
        "BENCH_CIFAR_ARCHIVE", ROOT.parent / "shared" / "datasets" / "cifar10-jpg.tar.gz")),
        help="the CIFAR-10 ImageFolder archive (env BENCH_CIFAR_ARCHIVE)")


def wait_for(predicate, what: str, progress, timeout: float):
    started, last = time.monotonic(), 0.0
    while True:
        value, note = predicate()
        if value is not None:
            return value, time.monotonic() - started
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            raise RuntimeError(f"{what}: not done after {timeout:.0f} s ({note})")
        if elapsed - last >= 10:
            progress(f"{what}: {note} ({elapsed:.0f} s)")
            last = elapsed
        time.sleep(1)


def run(args, progress) -> dict:
    archive = args.cifar_archive
    if not archive.is_file():
        raise RuntimeError(f"{archive} not found; pass --cifar-archive")
    with Server(progress) as server, httpx.Client(base_url=server.base, timeout=600,
                                                  headers=server.headers) as client:
        progress(f"uploading {archive} ({archive.stat().st_size / 1e6:.1f} MB)")
        started = time.monotonic()
        with open(archive, "rb") as f:
            resp = client.post("/datasets", files={"file": (archive.name, f)})
        if resp.status_code not in (201, 202):
            raise RuntimeError(f"POST /datasets answered {resp.status_code}: {resp.text}")
        upload_seconds = time.monotonic() - started
        dataset_id = resp.json()["id"]

        def dataset_ready():
            ds = client.get(f"/datasets/{dataset_id}").json()
            if ds["status"] == "failed":
                raise RuntimeError(f"dataset failed: {ds['error']}")
            p = ds["progress"]
            return (ds if ds["status"] == "ready" else None), f"decoded {p['done']}/{p['total']}"

        dataset, ready_seconds = wait_for(dataset_ready, "processing the upload", progress, 900)
        counts = dataset["counts"]
        if set(counts["train"].values()) != {5000} or set(counts["test"].values()) != {1000}:
            raise RuntimeError(f"unexpected counts {counts}")
        progress(f"dataset ready: {dataset['classes']}, 5000/1000 per class")

        resp = client.post("/jobs", json={**JOB, "dataset": dataset_id})
        if resp.status_code != 201:
            raise RuntimeError(f"POST /jobs answered {resp.status_code}: {resp.text}")
        job_id = resp.json()["id"]

        def job_done():
            job = client.get(f"/jobs/{job_id}").json()
            if job["status"] in ("failed", "cancelled"):
                raise RuntimeError(f"job ended {job['status']}: {job['error']}")
            p = job["progress"]
            return (job if job["status"] == "succeeded" else None), \
                f"step {p['step']}/{p['total_steps']}"

        job, train_seconds = wait_for(job_done, "training", progress, 3600)
        losses = client.get(f"/jobs/{job_id}/metrics", params={"name": "loss"}).json()["metrics"]
        per_epoch = {e: sum(p["epoch"] == e for p in losses) for e in (1, 2)}
        accuracy = job["metrics"]["eval_accuracy"]
        progress(f"trained in {train_seconds:.0f} s: eval_accuracy {accuracy:.4f}, loss points "
                 f"per epoch {per_epoch}")
        if per_epoch != {1: 6, 2: 6}:
            raise RuntimeError(f"expected 6 loss points per epoch, got {per_epoch}")
        if accuracy < MIN_ACCURACY:
            raise RuntimeError(f"eval_accuracy {accuracy:.4f} < {MIN_ACCURACY}")
        with tarfile.open(archive) as tf:
            member = next(m for m in tf if m.isfile() and m.name.startswith("test/cat/"))
            jpeg = tf.extractfile(member).read()
        answer = client.post("/predict", data={"job_id": job_id, "top_k": "3"},
                             files=[("image", ("cat.jpg", jpeg, "image/jpeg"))]).json()
        labels = [p["label"] for p in answer["predictions"][0]]
        if not set(labels) <= set(dataset["classes"]):
            raise RuntimeError(f"/predict answered {labels}, not CIFAR-10 class names")
    raw = {"upload_seconds": upload_seconds, "processing_seconds": ready_seconds,
           "train_seconds": train_seconds, "job": {k: job[k] for k in ("id", "device", "metrics")},
           "loss": [(p["epoch"], p["batch"], p["value"]) for p in losses],
           "predict_cat": labels}
    return {"title": TITLE, "raw": raw, "markdown": markdown(raw)}


def markdown(r: dict) -> str:
    m = r["job"]["metrics"]
    lines = [
        "Real CIFAR-10 (`../shared/datasets/cifar10-jpg.tar.gz`) uploaded through `POST /datasets`, "
        "then the tutorial's job on it, in embedded mode (`trainhub up`), on the "
        f"{r['job']['device']}.",
        "",
        "| step | result |",
        "|---|---:|",
        f"| upload (19 MB, HTTP) | {r['upload_seconds']:.1f} s |",
        f"| processing: validate + decode 60,000 JPEGs to a uint8 tensor file | "
        f"{r['processing_seconds']:.1f} s |",
        f"| training: lenet, 2 epochs, batch 4, sgd 0.001 momentum 0.9 (25,000 steps) | "
        f"{r['train_seconds']:.0f} s |",
        f"| throughput (second epoch) | {m['samples_per_second']:.0f} samples/s |",
        f"| **eval_accuracy** (tutorial: ~54%) | **{m['eval_accuracy']:.4f}** |",
        f"| train_accuracy / eval_loss | {m['train_accuracy']:.4f} / {m['eval_loss']:.4f} |",
        f"| /predict on a test cat (top 3) | {', '.join(r['predict_cat'])} |",
        "",
        "The `loss` points, the tutorial's `[epoch, batch] loss` lines:",
        "",
        "```",
        *[f"[{e}, {b:5d}] loss: {v:.3f}" for e, b, v in r["loss"]],
        "```",
    ]
    return "\n".join(lines)
