"""What the CIFAR-10 tutorial benchmarks share: the archive (whole, or a small subset for
--quick), its upload through POST /datasets, running a job through the API, and decoding the
JPEGs once into the uint8 arrays torchvision's CIFAR10 holds (for the tutorial's own script).

Not a benchmark module itself (bench/run.py loads only bench/*_bench.py)."""
from __future__ import annotations

import io
import os
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpg.tar.gz"
# The PyTorch CIFAR-10 tutorial's job (lenet is its Net).
TUTORIAL_HP = {"epochs": 2, "batch_size": 4, "optimizer": "sgd", "lr": 0.001, "momentum": 0.9,
               "log_every": 2000}
# --quick: images per class kept from each split, one epoch, a loss point every 100 batches.
QUICK_PER_CLASS = {"train": 200, "test": 50}
QUICK_HP = {**TUTORIAL_HP, "epochs": 1, "log_every": 100}


def add_archive_argument(parser) -> None:
    """--cifar-archive, once, whichever module asks first."""
    if "--cifar-archive" in parser._option_string_actions:  # noqa: SLF001
        return
    parser.add_argument("--cifar-archive", type=Path, default=Path(os.environ.get(
        "BENCH_CIFAR_ARCHIVE", DEFAULT_ARCHIVE)),
        help="the CIFAR-10 ImageFolder archive, train/ and test/ (env BENCH_CIFAR_ARCHIVE)")


def tutorial_hp(quick: bool) -> dict:
    return dict(QUICK_HP if quick else TUTORIAL_HP)


def archive_for(args, workdir: Path, progress) -> Path:
    """The archive a run uploads: the whole one, or (--quick) a subset written to workdir."""
    archive = args.cifar_archive
    if not archive.is_file():
        raise RuntimeError(f"{archive} not found; pass --cifar-archive")
    if not args.quick:
        return archive
    subset = workdir / "cifar10-subset.tar.gz"
    write_subset(archive, subset, QUICK_PER_CLASS)
    progress(f"quick: {subset.name} with {QUICK_PER_CLASS['train']} train and "
             f"{QUICK_PER_CLASS['test']} test images per class")
    return subset


def _image_members(tf: tarfile.TarFile):
    """(split, class, member) for every file train/<class>/<name> or test/<class>/<name>."""
    for member in tf:
        parts = member.name.split("/")
        if member.isfile() and len(parts) == 3 and parts[0] in ("train", "test"):
            yield parts[0], parts[1], member


def write_subset(archive: Path, dest: Path, per_class: dict[str, int]) -> None:
    """An ImageFolder archive with the first per_class[split] images of each class."""
    kept: Counter = Counter()
    with tarfile.open(archive) as src, tarfile.open(dest, "w:gz") as out:
        for split, label, member in _image_members(src):
            if kept[split, label] < per_class[split]:
                out.addfile(member, src.extractfile(member))
                kept[split, label] += 1


def archive_counts(archive: Path) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = {"train": Counter(), "test": Counter()}
    with tarfile.open(archive) as tf:
        for split, label, _member in _image_members(tf):
            counts[split][label] += 1
    return {split: dict(c) for split, c in counts.items()}


def decode_to_npy(archive: Path, dest: Path) -> dict[str, int]:
    """{train,test}_{images,labels}.npy in dest: uint8 (N, 32, 32, 3) as torchvision's CIFAR10
    holds its data, labels by the sorted class folder names (ImageFolder's order)."""
    from PIL import Image

    images: dict[str, list] = {"train": [], "test": []}
    names: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(archive) as tf:
        for split, label, member in _image_members(tf):
            with Image.open(io.BytesIO(tf.extractfile(member).read())) as im:
                images[split].append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            names[split].append(label)
    classes = sorted(set(names["train"]))
    for split in ("train", "test"):
        np.save(dest / f"{split}_images.npy", np.stack(images[split]))
        np.save(dest / f"{split}_labels.npy",
                np.array([classes.index(n) for n in names[split]], dtype=np.int64))
    return {split: len(images[split]) for split in images}


def wait_for(predicate, what: str, progress, timeout: float, interval: float = 1.0):
    """Calls predicate() -> (value or None, note) until a value; returns (value, seconds)."""
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
        time.sleep(interval)


def upload(client, archive: Path, progress, timeout: float = 900) -> tuple[dict, float, float]:
    """POST /datasets, then wait until it is ready with the archive's per-class counts.
    Returns (the dataset, upload seconds, processing seconds)."""
    progress(f"uploading {archive.name} ({archive.stat().st_size / 1e6:.1f} MB)")
    started = time.monotonic()
    with open(archive, "rb") as f:
        resp = client.post("/datasets", files={"file": (archive.name, f)})
    if resp.status_code not in (201, 202):
        raise RuntimeError(f"POST /datasets answered {resp.status_code}: {resp.text}")
    upload_seconds = time.monotonic() - started
    dataset_id = resp.json()["id"]

    def ready():
        ds = client.get(f"/datasets/{dataset_id}").json()
        if ds["status"] == "failed":
            raise RuntimeError(f"dataset failed: {ds['error']}")
        p = ds["progress"]
        return (ds if ds["status"] == "ready" else None), f"decoded {p['done']}/{p['total']}"

    dataset, ready_seconds = wait_for(ready, "processing the upload", progress, timeout)
    expected = archive_counts(archive)
    if dataset["counts"] != expected:
        raise RuntimeError(f"dataset counts {dataset['counts']}, the archive holds {expected}")
    progress(f"dataset {dataset_id} ready: {sum(expected['train'].values())} train, "
             f"{sum(expected['test'].values())} test images")
    return dataset, upload_seconds, ready_seconds


def run_job(client, job: dict, progress, timeout: float = 3600,
            poll: float = 0.2) -> tuple[dict, float]:
    """POST /jobs, then poll GET /jobs/{id} every `poll` s until it succeeded.
    Returns (the job, seconds from sending the POST to seeing `succeeded`)."""
    started = time.monotonic()
    resp = client.post("/jobs", json=job)
    if resp.status_code != 201:
        raise RuntimeError(f"POST /jobs answered {resp.status_code}: {resp.text}")
    job_id = resp.json()["id"]

    def done():
        row = client.get(f"/jobs/{job_id}").json()
        if row["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"job {job_id} ended {row['status']}: {row['error']}")
        p = row["progress"]
        return (row if row["status"] == "succeeded" else None), \
            f"{row['status']}, step {p['step']}/{p['total_steps']}"

    row, _ = wait_for(done, "training", progress, timeout, poll)
    return row, time.monotonic() - started
