"""P1 and P2 (issue #12): the tutorial's job through the API, against the tutorial's own
script with the data in memory (P1) and against the same `fit` called in-process (P2).

CIFAR-10 (../shared/datasets/cifar10-jpg.tar.gz) is decoded once into uint8 arrays for the
reference and uploaded once through POST /datasets for trainhub (neither is timed). Then, for
each run, one after the other on the same idle-as-can-be machine:
  - reference: bench/tutorial_reference.py (the tutorial's script: PIL per item,
    ToTensor + Normalize, DataLoader batch 4 with 2 workers, `loss.item()` every batch),
    training + test as it times itself;
  - trainhub: POST /jobs → GET /jobs/{id} says succeeded (polled every 0.2 s), against
    `trainhub up` in embedded mode;
  - in-process: bench/inprocess_fit.py, worker.loop.fit on the runner's dataset and model
    with a NullReporter, dataset read + build + fit.
P1 ratio = median trainhub / median reference; P2 overhead = median trainhub / median
in-process - 1. --quick: one run each way, one epoch on 200/50 images per class.

Run it on an idle machine: the tutorial's script (two intra-op threads and two DataLoader
workers on 2 cores) slows down 25-90x when another process keeps a core busy (the quick
reference: 1.4 s with OMP_NUM_THREADS=1, 35-120 s at its default two threads while another
training ran beside it), so a busy machine makes the ratio meaningless.
"""
from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from predict_bench import Server
from tutorial_job import (
    add_archive_argument,
    archive_for,
    decode_to_npy,
    run_job,
    tutorial_hp,
    upload,
)

TITLE = "P1/P2: the tutorial job through the API vs the tutorial's script and fit in-process"
BENCH = Path(__file__).resolve().parent
P1_TARGET_RATIO = 0.25
ACCURACY_POINTS = 2.0  # P1: trainhub's median accuracy within this of the reference's
P2_TARGET_OVERHEAD = 0.05


def add_arguments(parser) -> None:
    add_archive_argument(parser)
    parser.add_argument("--p1-runs", type=int, default=None,
                        help="P1/P2: runs each way, interleaved (default 3, quick 1)")


def run_script(args: list[str], what: str, progress, timeout: float = 3600) -> dict:
    """Runs a bench script with this Python; returns the JSON of its last stdout line."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{what} exited {done.returncode}:\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.monotonic() - started
    return result


def seconds_between(job: dict, start: str, end: str) -> float | None:
    if not job.get(start) or not job.get(end):
        return None
    parse = dt.datetime.fromisoformat
    return (parse(job[end]) - parse(job[start])).total_seconds()


def stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run(args, progress) -> dict:
    runs = args.p1_runs or (1 if args.quick else 3)
    if runs <= 0:
        raise SystemExit(f"--p1-runs must be > 0, got {runs}")
    hp = tutorial_hp(args.quick)
    job = {"model": "lenet", "hyperparameters": hp}
    arms: dict[str, list[dict]] = {"reference": [], "trainhub": [], "inprocess": []}
    with tempfile.TemporaryDirectory(prefix="trainhub-bench-p1-") as tmp:
        archive = archive_for(args, Path(tmp), progress)
        npy = Path(tmp) / "npy"
        npy.mkdir()
        started = time.monotonic()
        counts = decode_to_npy(archive, npy)
        progress(f"decoded {counts['train']} train and {counts['test']} test JPEGs to .npy "
                 f"for the reference in {time.monotonic() - started:.0f} s (not timed)")
        with Server(progress) as server, httpx.Client(base_url=server.base, timeout=600,
                                                      headers=server.headers) as client:
            dataset, _, _ = upload(client, archive, progress)
            job["dataset"] = dataset["id"]
            for i in range(runs):
                ref = run_script([str(BENCH / "tutorial_reference.py"), "--data", str(npy),
                               "--epochs", str(hp["epochs"]), "--batch-size",
                               str(hp["batch_size"]), "--log-every", str(hp["log_every"]),
                               "--seed", str(i)], "the tutorial's script", progress)
                arms["reference"].append(ref)
                progress(f"run {i + 1}/{runs}: reference {ref['seconds']:.1f} s, "
                         f"accuracy {ref['accuracy']:.4f}")
                row, seconds = run_job(client, job, progress)
                arms["trainhub"].append({
                    "seconds": seconds, "accuracy": row["metrics"]["eval_accuracy"],
                    "id": row["id"], "device": row.get("device"),
                    "queued_seconds": seconds_between(row, "created_at", "started_at"),
                    "running_seconds": seconds_between(row, "started_at", "finished_at"),
                    "samples_per_second": row["metrics"].get("samples_per_second")})
                progress(f"run {i + 1}/{runs}: trainhub {seconds:.1f} s, accuracy "
                         f"{arms['trainhub'][-1]['accuracy']:.4f}")
                inproc = run_script([str(BENCH / "inprocess_fit.py"), "--data-dir",
                                  str(server.data_dir), "--dataset", dataset["id"],
                                  "--job", json.dumps(job)], "fit in-process", progress)
                arms["inprocess"].append(inproc)
                progress(f"run {i + 1}/{runs}: in-process fit {inproc['seconds']:.1f} s, "
                         f"accuracy {inproc['accuracy']:.4f}")
    raw = {"runs": runs, "hyperparameters": hp, "images": counts, "arms": arms,
           **figures(arms)}
    return {"title": TITLE, "raw": raw, "markdown": markdown(raw), "summary": summary(raw)}


def figures(arms: dict[str, list[dict]]) -> dict:
    seconds = {name: stats([r["seconds"] for r in rows]) for name, rows in arms.items()}
    accuracy = {name: stats([r["accuracy"] for r in rows]) for name, rows in arms.items()}
    ratio = seconds["trainhub"]["median"] / seconds["reference"]["median"]
    points = 100 * (accuracy["trainhub"]["median"] - accuracy["reference"]["median"])
    overhead = seconds["trainhub"]["median"] / seconds["inprocess"]["median"] - 1
    return {"seconds": seconds, "accuracy": accuracy, "p1_ratio": ratio,
            "accuracy_points": points,
            "p1_met": ratio <= P1_TARGET_RATIO and abs(points) <= ACCURACY_POINTS,
            "p2_overhead": overhead, "p2_met": overhead <= P2_TARGET_OVERHEAD}


def _mmm(s: dict, fmt: str = "{:.1f}", unit: str = " s") -> str:
    return " / ".join(fmt.format(s[k]) for k in ("min", "median", "max")) + unit


def _pct(s: dict) -> str:
    return " / ".join(f"{100 * s[k]:.2f}" for k in ("min", "median", "max")) + " %"


def p1_verdict(r: dict) -> str:
    ratio, points = r["p1_ratio"], r["accuracy_points"]
    parts = [f"ratio {ratio:.3f} ({'within' if ratio <= P1_TARGET_RATIO else 'over'} "
             f"≤ {P1_TARGET_RATIO} by {abs(P1_TARGET_RATIO - ratio):.3f})",
             f"accuracy {points:+.2f} points ({'within' if abs(points) <= ACCURACY_POINTS else 'outside'} "
             f"±{ACCURACY_POINTS:g})"]
    return ("met: " if r["p1_met"] else "NOT met: ") + ", ".join(parts)


def p2_verdict(r: dict) -> str:
    over = r["p2_overhead"]
    return (f"{'met' if r['p2_met'] else 'NOT met'}: {100 * over:+.1f}% "
            f"(target ≤ {100 * P2_TARGET_OVERHEAD:.0f}%, "
            f"{'under' if r['p2_met'] else 'over'} it by "
            f"{abs(100 * (P2_TARGET_OVERHEAD - over)):.1f} points)")


def markdown(r: dict) -> str:
    hp, s, a, arms = r["hyperparameters"], r["seconds"], r["accuracy"], r["arms"]
    queued = [x["queued_seconds"] for x in arms["trainhub"] if x["queued_seconds"] is not None]
    running = [x["running_seconds"] for x in arms["trainhub"]
               if x["running_seconds"] is not None]
    fit_only = stats([x["fit_seconds"] for x in arms["inprocess"]])
    lines = [
        f"The tutorial's job: lenet, {hp['epochs']} epoch(s), batch {hp['batch_size']}, SGD "
        f"{hp['lr']:g} momentum {hp['momentum']:g}, on {r['images']['train']:,} train and "
        f"{r['images']['test']:,} test images; {r['runs']} run(s) each way, interleaved "
        "(reference, trainhub, in-process), on one `trainhub up` (embedded mode) whose idle "
        "API and worker stay up throughout. Seconds, min / median / max:",
        "",
        "| arm | seconds | test accuracy |",
        "|---|---:|---:|",
        "| reference: the tutorial's script, data in memory (PIL per item, ToTensor + "
        f"Normalize, DataLoader 2 workers), training + test | {_mmm(s['reference'])} | "
        f"{_pct(a['reference'])} |",
        f"| **trainhub: POST /jobs → succeeded** | **{_mmm(s['trainhub'])}** | "
        f"{_pct(a['trainhub'])} |",
        "| in-process: the runner's dataset read + models.build + worker.loop.fit "
        f"(NullReporter) | {_mmm(s['inprocess'])} | {_pct(a['inprocess'])} |",
        "",
        "Of the trainhub job's time: queued (created → started) "
        + (_mmm(stats(queued), "{:.2f}") if queued else "n/a")
        + ", running (started → finished) "
        + (_mmm(stats(running)) if running else "n/a")
        + f"; the in-process arm's `fit` alone: {_mmm(fit_only)}.",
        "",
        f"P1 ratio: {r['p1_ratio']:.3f}",
        "",
        f"P1 (target: ratio ≤ {P1_TARGET_RATIO} at accuracy within {ACCURACY_POINTS:g} points "
        f"of the reference's median): {p1_verdict(r)}.",
        "",
        f"P2 overhead (median trainhub / median in-process − 1): {p2_verdict(r)}.",
    ]
    return "\n".join(lines)


def summary(r: dict) -> list[dict]:
    s, a = r["seconds"], r["accuracy"]
    return [
        {"key": "P1", "figure": "P1: tutorial job (CIFAR-10, lenet, "
         f"{r['hyperparameters']['epochs']} epoch(s), batch 4, SGD), POST → succeeded",
         "trainhub": f"{_mmm(s['trainhub'])}, {100 * a['trainhub']['median']:.2f}%",
         "reference": f"tutorial script in memory: {_mmm(s['reference'])}, "
                      f"{100 * a['reference']['median']:.2f}%",
         "target": f"ratio ≤ {P1_TARGET_RATIO}, accuracy ±{ACCURACY_POINTS:g} points",
         "met": r["p1_met"],
         "result": f"ratio {r['p1_ratio']:.3f}, accuracy {r['accuracy_points']:+.2f} points"},
        {"key": "P2", "figure": "P2: the same job through API and worker vs `fit` in-process",
         "trainhub": _mmm(s["trainhub"]), "reference": f"fit in-process: {_mmm(s['inprocess'])}",
         "target": f"≤ {100 * P2_TARGET_OVERHEAD:.0f}% over", "met": r["p2_met"],
         "result": f"{100 * r['p2_overhead']:+.1f}%"},
    ]
