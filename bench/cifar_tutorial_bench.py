"""The PyTorch CIFAR-10 tutorial, end to end through the API, on real CIFAR-10.

Uploads ../shared/datasets/cifar10-jpg.tar.gz (50,000 train and 10,000 test JPEGs) with
POST /datasets, waits for it to be `ready` with the archive's images per class, then trains
the tutorial's job (lenet, 2 epochs, batch 4, sgd lr 0.001 momentum 0.9, log_every 2000)
and checks: exactly 6 `loss` points per epoch, eval_accuracy >= 0.50 (the tutorial reports
about 54%), /predict answering with CIFAR-10's class names. --quick: a subset of 200/50
images per class, one epoch, a loss point every 100 batches, no accuracy floor.
"""
from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import httpx
from predict_bench import Server
from tutorial_job import add_archive_argument, archive_for, run_job, tutorial_hp, upload

TITLE = "CIFAR-10 tutorial through the API (upload, train, predict)"
MIN_ACCURACY = 0.50  # the full run's; --quick (one epoch on 2,000 images) checks no floor


def add_arguments(parser) -> None:
    add_archive_argument(parser)


def run(args, progress) -> dict:
    hp = tutorial_hp(args.quick)
    with tempfile.TemporaryDirectory(prefix="trainhub-bench-cifar-") as tmp, \
            Server(progress) as server, \
            httpx.Client(base_url=server.base, timeout=600, headers=server.headers) as client:
        archive = archive_for(args, Path(tmp), progress)
        archive_mb = archive.stat().st_size / 1e6
        dataset, upload_seconds, ready_seconds = upload(client, archive, progress)
        job, train_seconds = run_job(client, {"model": "lenet", "hyperparameters": hp,
                                              "dataset": dataset["id"]}, progress, poll=1.0)
        job_id = job["id"]
        losses = client.get(f"/jobs/{job_id}/metrics", params={"name": "loss"}).json()["metrics"]
        epochs = range(1, hp["epochs"] + 1)
        per_epoch = {e: sum(p["epoch"] == e for p in losses) for e in epochs}
        n_train = sum(dataset["counts"]["train"].values())
        expected = {e: n_train // hp["batch_size"] // hp["log_every"] for e in epochs}
        accuracy = job["metrics"]["eval_accuracy"]
        progress(f"trained in {train_seconds:.0f} s: eval_accuracy {accuracy:.4f}, loss points "
                 f"per epoch {per_epoch}")
        if per_epoch != expected:
            raise RuntimeError(f"expected {expected} loss points per epoch, got {per_epoch}")
        if not args.quick and accuracy < MIN_ACCURACY:
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
           "hyperparameters": hp, "archive": {"name": archive.name, "mb": archive_mb,
                                              "counts": dataset["counts"]},
           "loss": [(p["epoch"], p["batch"], p["value"]) for p in losses],
           "predict_cat": labels}
    summary = [{"key": "cifar-e2e", "figure": "CIFAR-10 tutorial end to end (one run): "
                "upload + processing, then POST /jobs → succeeded",
                "trainhub": f"{upload_seconds + ready_seconds:.1f} s, then {train_seconds:.1f} "
                            f"s, eval_accuracy {100 * accuracy:.2f}%",
                "target": None if args.quick else f"eval_accuracy ≥ {100 * MIN_ACCURACY:.0f}%",
                "met": None if args.quick else True}]  # below the floor the run fails
    return {"title": TITLE, "raw": raw, "markdown": markdown(raw), "summary": summary}


def markdown(r: dict) -> str:
    m, hp, counts = r["job"]["metrics"], r["hyperparameters"], r["archive"]["counts"]
    n_train, n_test = (sum(counts[s].values()) for s in ("train", "test"))
    steps = n_train // hp["batch_size"] * hp["epochs"]
    lines = [
        f"Real CIFAR-10 (`{r['archive']['name']}`) uploaded through `POST /datasets`, "
        "then the tutorial's job on it, in embedded mode (`trainhub up`), on the "
        f"{r['job']['device']}.",
        "",
        "| step | result |",
        "|---|---:|",
        f"| upload ({r['archive']['mb']:.1f} MB, HTTP) | {r['upload_seconds']:.1f} s |",
        f"| processing: validate + decode {n_train + n_test:,} JPEGs to a uint8 tensor file | "
        f"{r['processing_seconds']:.1f} s |",
        f"| training: lenet, {hp['epochs']} epochs, batch {hp['batch_size']}, sgd {hp['lr']:g} "
        f"momentum {hp['momentum']:g} ({steps:,} steps), POST → succeeded | "
        f"{r['train_seconds']:.0f} s |",
        f"| throughput (last epoch) | {m['samples_per_second']:.0f} samples/s |",
        f"| **eval_accuracy** (tutorial: ~54% after 2 epochs on all 50,000) | "
        f"**{m['eval_accuracy']:.4f}** |",
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
