"""The GPU target (issue #12): ResNet-18 on CIFAR-10 through the API to at least 93% test
accuracy in at most 60 s of job time on one H100, training at least 3x the samples/s of a
plain DataLoader loop of the same model (bench/resnet_reference.py) measured in the same run.

It runs where torch sees a CUDA device. Elsewhere a full run measures nothing and says so in
its section and summary row (no CPU figure stands in for a GPU one); --quick runs both arms
on the CPU on a few images a class, one epoch, to check that the benchmark itself works.

The job (GPU_HP): 18 epochs, batch 512, SGD nesterov 0.4 with OneCycleLR, weight decay 5e-4,
random crop (padding 4) and horizontal flip on the device, bf16 autocast, channels_last,
torch.compile. Job time is the job's running time (started_at → finished_at: dataset read,
compilation, training and every epoch's evaluation); samples/s is the median of the job's
per-epoch `samples_per_second` after the first epoch (which compiles).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from predict_bench import Server
from training_bench import run_script, seconds_between
from tutorial_job import (
    add_archive_argument,
    decode_to_npy,
    run_job,
    upload,
    write_subset,
)

TITLE = "GPU: ResNet-18 on CIFAR-10 through the API vs a plain DataLoader loop"
BENCH = Path(__file__).resolve().parent
TARGET_ACCURACY = 0.93
TARGET_JOB_SECONDS = 60.0
TARGET_SPEEDUP = 3.0
GPU_HP = {"epochs": 18, "batch_size": 512, "optimizer": "sgd", "lr": 0.4, "momentum": 0.9,
          "nesterov": True, "weight_decay": 5e-4, "scheduler": "onecycle", "log_every": 20,
          "amp": "bf16", "channels_last": True, "compile": True,
          "augment": {"random_crop_padding": 4, "horizontal_flip": True}}
REFERENCE_EPOCHS = 3
# --quick (on the CPU): images a class of each split, and a job that only has to run.
QUICK_PER_CLASS = {"train": 20, "test": 10}
QUICK_HP = {**GPU_HP, "epochs": 2, "batch_size": 50, "log_every": 2, "amp": "off",
            "channels_last": False, "compile": False}


def add_arguments(parser) -> None:
    add_archive_argument(parser)


def cuda_device() -> str | None:
    """The CUDA device's name, asked of a fresh process (as the worker and reference see it),
    or None when torch sees none."""
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.get_device_name()"
                           " if torch.cuda.is_available() else '')"],
                          capture_output=True, text=True, timeout=120)
    return done.stdout.strip() or None


def run(args, progress) -> dict:
    gpu = cuda_device()
    if gpu is None and not args.quick:
        progress("no CUDA device: the GPU benchmark measures nothing on this machine")
        raw = {"gpu": None}
        return {"title": TITLE, "raw": raw, "markdown": markdown(raw), "summary": summary(raw)}
    hp = dict(GPU_HP if gpu is not None and not args.quick else QUICK_HP)
    archive = args.cifar_archive
    if not archive.is_file():
        raise RuntimeError(f"{archive} not found; pass --cifar-archive")
    with tempfile.TemporaryDirectory(prefix="trainhub-bench-gpu-") as tmp:
        if args.quick:
            subset = Path(tmp) / "cifar10-tiny.tar.gz"
            write_subset(archive, subset, QUICK_PER_CLASS)
            archive = subset
        npy = Path(tmp) / "npy"
        npy.mkdir()
        counts = decode_to_npy(archive, npy)
        progress(f"reference: the plain DataLoader loop on {gpu or 'the CPU'}")
        reference = run_script([str(BENCH / "resnet_reference.py"), "--data", str(npy),
                                "--epochs", str(hp["epochs"] if args.quick else REFERENCE_EPOCHS),
                                "--batch-size", str(hp["batch_size"]), "--lr", str(hp["lr"])]
                               + (["--workers", "2"] if args.quick else []),
                               "the plain DataLoader loop", progress)
        progress(f"reference: {reference['samples_per_second']:.0f} samples/s")
        with Server(progress) as server, httpx.Client(base_url=server.base, timeout=600,
                                                      headers=server.headers) as client:
            dataset, _, _ = upload(client, archive, progress)
            job = {"model": "resnet18", "dataset": dataset["id"], "hyperparameters": hp}
            row, seconds = run_job(client, job, progress)
            progress(f"trainhub: {seconds:.1f} s from POST, accuracy "
                     f"{row['metrics']['eval_accuracy']:.4f}")
            per_epoch = client.get(f"/jobs/{row['id']}/metrics",
                                   params={"name": "samples_per_second"}).json()["metrics"]
    rates = [p["value"] for p in per_epoch]
    raw = {"gpu": gpu or "none (quick run on the CPU)", "quick": args.quick,
           "hyperparameters": hp, "images": counts, "reference": reference,
           "job": {"id": row["id"], "device": row.get("device"),
                   "seconds_from_post": seconds,
                   "running_seconds": seconds_between(row, "started_at", "finished_at"),
                   "accuracy": row["metrics"]["eval_accuracy"],
                   "samples_per_second": statistics.median(rates[1:] or rates),
                   "epoch_samples_per_second": rates}}
    return {"title": TITLE, "raw": raw, "markdown": markdown(raw), "summary": summary(raw)}


def verdict(r: dict) -> dict:
    job, ref = r["job"], r["reference"]
    speedup = job["samples_per_second"] / ref["samples_per_second"]
    running = job["running_seconds"] if job["running_seconds"] is not None else float("inf")
    return {"speedup": speedup, "running": running,
            "met": (job["accuracy"] >= TARGET_ACCURACY and running <= TARGET_JOB_SECONDS
                    and speedup >= TARGET_SPEEDUP)}


TARGET = (f"≥ {100 * TARGET_ACCURACY:.0f}% in ≤ {TARGET_JOB_SECONDS:.0f} s of job time on one "
          f"H100; ≥ {TARGET_SPEEDUP:g}× the DataLoader loop's samples/s")


def markdown(r: dict) -> str:
    if r["gpu"] is None:
        return ("**Not measured: this machine has no CUDA device** (`torch.cuda.is_available()` "
                "is false), and the target is a GPU one: " + TARGET + ". On a GPU machine, "
                "`.venv/bin/python bench/run.py --only gpu` runs it: the job through the API "
                f"(resnet18, {GPU_HP['epochs']} epochs, batch {GPU_HP['batch_size']}, bf16, "
                "channels_last, compile, augmentation on the device) and "
                "`bench/resnet_reference.py` (the same model from a DataLoader with PIL "
                "transforms in worker processes, fp32, eager) for the samples/s ratio.")
    job, ref, v = r["job"], r["reference"], verdict(r)
    hp = r["hyperparameters"]
    lines = [
        f"Device: {r['gpu']}; {r['images']['train']:,} train and {r['images']['test']:,} test "
        f"images. The job: resnet18, {hp['epochs']} epochs, batch {hp['batch_size']}, amp "
        f"{hp['amp']}, channels_last {hp['channels_last']}, compile {hp['compile']}.",
        "",
        "| arm | samples/s (after epoch 1) | job time | test accuracy |",
        "|---|---:|---:|---:|",
        f"| plain DataLoader loop ({ref['workers']} workers, fp32, eager; "
        f"{ref['epochs']} epochs) | {ref['samples_per_second']:,.0f} | — | — |",
        f"| **trainhub: POST /jobs → succeeded** | **{job['samples_per_second']:,.0f}** | "
        f"{v['running']:.1f} s running ({job['seconds_from_post']:.1f} s from POST) | "
        f"{100 * job['accuracy']:.2f}% |",
        "",
        f"Speed-up {v['speedup']:.2f}×. Target ({TARGET}): "
        + ("not judged: a quick run on a few images a class only checks that the benchmark "
           "runs; its figures mean nothing." if r.get("quick")
           else "met." if v["met"] else "**not met**."),
    ]
    return "\n".join(lines)


def summary(r: dict) -> list[dict]:
    row = {"key": "gpu-resnet18", "figure": "GPU: ResNet-18, CIFAR-10, through the API",
           "target": TARGET}
    if r["gpu"] is None:
        return [{**row, "trainhub": "not measured", "met": None, "measured": False,
                 "result": "no CUDA device on this machine"}]
    job, ref, v = r["job"], r["reference"], verdict(r)
    return [{**row, "trainhub": f"{v['running']:.1f} s, {100 * job['accuracy']:.2f}%, "
                                f"{job['samples_per_second']:,.0f} samples/s",
             "reference": f"DataLoader loop: {ref['samples_per_second']:,.0f} samples/s",
             "met": None if r.get("quick") else v["met"],
             "result": f"{v['speedup']:.2f}× the loop"}]
