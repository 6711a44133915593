"""`make bench`: run every benchmark module in bench/ and rewrite BENCHMARKS.md.

A benchmark module is a file bench/<name>_bench.py that defines
    TITLE: str
    add_arguments(parser)   (optional) its own command-line flags
    run(args, progress) -> {"title", "markdown", "raw", "summary"}   raises on any failure
"summary" (optional) is a list of rows for the table at the top of the report: {"key",
"figure", "trainhub", "reference", "target", "met" (True, False or None), "result", and
"measured": False for a figure this machine cannot measure (a GPU one on a CPU box)}; rows of
the same key from several modules are merged (P3 read: trainhub's figure from api_reads, its
MLflow reference from ingest).
Results go to BENCHMARKS.md (markdown, committed) and bench/results/<time>.json (raw, ignored
by git). BENCHMARKS.md is only rewritten when every selected benchmark succeeded.

    .venv/bin/python bench/run.py               # full run (about 20 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick       # a short smoke run (numbers are noisy)
    .venv/bin/python bench/run.py --only training --p1-runs 5    # P1/P2 only
    .venv/bin/python bench/run.py --only predict --requests 2000 --duration 30
Every flag also reads from the environment: BENCH_QUICK=1, BENCH_PREDICT_REQUESTS=2000, ...
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for path in (str(BENCH), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

_started = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", flush=True)


def discover() -> list[str]:
    return sorted(p.stem for p in BENCH.glob("*_bench.py"))


def build_parser(modules) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
                        help="short run: fewer requests, shorter durations (env BENCH_QUICK=1)")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="run only benchmarks whose module name contains NAME "
                             f"(repeatable); available: {', '.join(modules)}")
    parser.add_argument("--output", type=Path, default=Path(os.environ.get(
                            "BENCH_OUTPUT", ROOT / "BENCHMARKS.md")),
                        help="markdown file to rewrite (default BENCHMARKS.md)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the markdown instead of writing it")
    for module in modules.values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    return parser


# -- machine info --------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def cpu_times() -> tuple[float, float]:
    with open("/proc/stat") as f:
        values = [float(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values) - idle, sum(values)


def cores_busy(seconds: float = 2.0) -> float | None:
    """How many cores the whole machine kept busy over `seconds` (before we start)."""
    try:
        busy0, total0 = cpu_times()
        time.sleep(seconds)
        busy1, total1 = cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / max(total1 - total0, 1e-9) * (os.cpu_count() or 1)


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line() -> str:
    python = Path(sys.executable)
    try:
        python = python.relative_to(ROOT)
    except ValueError:
        pass
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    command = shlex.join([str(python), str(script), *sys.argv[1:]])
    if os.environ.get("MAKELEVEL"):
        return f"make bench  # runs: {command}"
    return command


def machine_info() -> dict:
    import torch

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": affinity,
        "memory": memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "busy_before": cores_busy(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_revision(),
        "command": command_line(),
    }


# -- the report ----------------------------------------------------------------------------

HOW = """\
## What is measured

The training and `/predict` benchmarks start their own trainhub in embedded mode: `python -m
cli up` on a free port, `TRAINHUB_DATA_DIR` a fresh temporary folder (SQLite database,
filesystem broker), with `TRAINHUB_DATABASE_URL`, `TRAINHUB_BROKER_URL` and
`TRAINHUB_REDIS_URL` removed from the environment, so nothing outside the machine is
involved. The ingest, API reads, live-progress and ASHA benchmarks use a fresh database on
the local PostgreSQL (created and dropped by the benchmark) and the local Redis. The clients run
in the benchmark process on the same machine, over loopback HTTP (httpx), and share its CPUs
with the server. Each section says what it times; what follows details `/predict`'s.

- **Server time** is the time spent inside the ASGI app, as the API reports it in the
  `Server-Timing: app;dur=<ms>` response header (the `server_timing` middleware in
  `api/body_limits.py`): waiting for a thread of the app's pool, multipart parsing, the job and
  checkpoint lookups in the database, PNG decoding, the forward pass and JSON encoding. It
  leaves out uvicorn's socket and HTTP handling and the network.
- **Client time** is the wall time the client sees for one `POST /predict`, from sending
  the request to having read the whole response (`time.perf_counter()` around
  `httpx.Client.post`).
- **Latency**: one client, one connection, one request at a time, one image per request,
  after warm-up requests that are not recorded (the first loads the checkpoint into the
  API's model cache).
- **Throughput**: N client threads, each with its own `httpx.Client` (keep-alive
  connection), each sending one-image requests back to back for a fixed time; requests/s =
  successful responses / wall time.
- **Batch**: one request carrying 64 images (the server's default
  `TRAINHUB_PREDICT_MAX_IMAGES`): one forward pass over the batch.
- **Checks**: every response must be a 200 with `top_k` predictions per image, and top-1
  accuracy over all the images sent must be at least 0.9 against the true labels, or the
  run fails and this file is left alone.

The numbers are from one run on one machine. The API and the clients share the CPUs, so on
a small machine anything else running moves the figures a lot (throughput by tens of
percent): each phase says how many cores the API, the clients and other processes used.
Compare runs only on the same machine under the same load.
"""


# Written by hand from profiles: follows the summary of a full run that missed a target.
WHATS_LEFT = BENCH / "whats_left.md"


# Issue #12's figures first, in its table's order; other rows after them.
SUMMARY_ORDER = ["P1", "P2", "P3-ingest-no-redis", "P3-ingest-with-redis", "P3-read",
                 "P4-job", "P4-metrics", "post-jobs", "post-jobs-tenant"]


def summary_rows(results: list[dict]) -> list[dict]:
    merged: dict[str, dict] = {}
    for result in results:
        for row in result.get("summary") or []:
            into = merged.setdefault(row["key"], {})
            into.update({k: v for k, v in row.items() if v is not None or k not in into})
    return sorted(merged.values(), key=lambda r: (  # stable: the rest in module order
        SUMMARY_ORDER.index(r["key"]) if r["key"] in SUMMARY_ORDER else len(SUMMARY_ORDER)))


def summary_table(rows: list[dict]) -> list[str]:
    lines = ["## Summary", "",
             "Medians judged against each target; min / median / max over the runs of this "
             "report. Details and method in each section below.", "",
             "| figure | trainhub (min / median / max) | reference (same run) | target | met? |",
             "|---|---|---|---|---|"]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "—"}[row.get("met")]
        if row.get("result"):
            met += f" ({row['result']})"
        lines.append(f"| {row.get('figure', row['key'])} | {row.get('trainhub') or '—'} "
                     f"| {row.get('reference') or '—'} | {row.get('target') or '—'} | {met} |")
    missed = [row.get("figure", row["key"]) for row in rows if row.get("met") is False]
    lines += ["", "Not met: " + ("; ".join(missed) if missed else "none") + "."]
    unmeasured = [f"{row.get('figure', row['key'])} ({row['result']})" for row in rows
                  if row.get("measured") is False]
    if unmeasured:
        lines += ["", "Not measured on this machine: " + "; ".join(unmeasured) + "."]
    lines += [""]
    return lines


def render(info: dict, results: list[dict], quick: bool) -> str:
    lines = ["# Benchmarks", "",
             "Written by `make bench` (`bench/run.py`); rerun it to update this file rather "
             "than editing it by hand.", ""]
    if quick:
        lines += ["> **Quick run** (`--quick`): few requests and short durations; the "
                  "numbers are rough. Run `make bench` for the real figures.", ""]
    rows = summary_rows(results)
    if rows:
        lines += summary_table(rows)
        if not quick and any(row.get("met") is False for row in rows):
            lines += [WHATS_LEFT.read_text().rstrip(), ""]
    busy = ("not measured" if info["busy_before"] is None else
            f"{info['busy_before']:.2f} cores busy in the 2 s before the run")
    lines += ["## Machine", "", "| | |", "|---|---|",
              f"| CPU | {info['cpu']} |",
              f"| cores | {info['cores']} (available to the benchmark: "
              f"{info['cores_available']}) |",
              f"| memory | {info['memory']} |",
              f"| OS | {info['os']} |",
              f"| Python | {info['python']} |",
              f"| torch | {info['torch']} ({info['torch_threads']} intra-op threads) |",
              f"| other load | {busy} |",
              f"| date | {info['date']} |",
              f"| trainhub | git {info['git']} |",
              f"| command | `{info['command']}` |", ""]
    for result in results:
        lines += [f"## {result['title']}", "", result["markdown"].rstrip(), ""]
    lines += [HOW, "## How to reproduce", "",
              "```sh",
              "make bench                                  # .venv/bin/python bench/run.py",
              ".venv/bin/python bench/run.py --quick       # short smoke run (rough numbers)",
              ".venv/bin/python bench/run.py --help        # every option",
              ".venv/bin/python bench/run.py --requests 5000 --duration 60 --clients 16",
              "```", "",
              "Needs the virtualenv (`make install`), the CIFAR-10 archive "
              "(`../shared/datasets/cifar10-jpg.tar.gz`, or `--cifar-archive`), and the local "
              "PostgreSQL and Redis (`make services`) for the ingest, API reads, "
              "live-progress and ASHA benchmarks; the full run installs MLflow into its own venv "
              "(`~/.cache/trainhub-bench/venv-mlflow`, with pip) and wrk (apt) when they are "
              "missing. "
              "Close other CPU-heavy programs first. Each flag also reads from the environment "
              "(`BENCH_QUICK=1`, `BENCH_PREDICT_REQUESTS`, `BENCH_PREDICT_DURATION`, "
              "`BENCH_PREDICT_CLIENTS`, ...). The raw numbers of each run are saved to "
              "`bench/results/` (ignored by git). To add a benchmark, add a "
              "`bench/<name>_bench.py` module (see the `bench/run.py` docstring).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    names = discover()
    modules = {name: importlib.import_module(name) for name in names}
    args = build_parser(modules).parse_args(argv)
    selected = [n for n in names if not args.only or any(o in n for o in args.only)]
    if not selected:
        print(f"no benchmark matches {args.only}; available: {', '.join(names)}",
              file=sys.stderr)
        return 2
    info = machine_info()
    progress(f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}; "
             f"benchmarks: {', '.join(selected)}{' (quick)' if args.quick else ''}")
    if info["busy_before"] is not None and info["busy_before"] > 0.25:
        progress(f"warning: the machine is already busy ({info['busy_before']:.2f} cores); "
                 "other programs will slow the server and skew the numbers")
    results = []
    for name in selected:
        module = modules[name]
        progress(f"== {module.TITLE} ({name}) ==")
        try:
            results.append(module.run(args, progress))
        except KeyboardInterrupt:
            progress("interrupted; BENCHMARKS.md left as it was")
            return 130
        except Exception:
            traceback.print_exc()
            progress(f"{name} FAILED; {args.output} left as it was")
            return 1
        progress(f"== {module.TITLE} done ==")

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    raw_dir = BENCH / "results"
    raw_dir.mkdir(exist_ok=True)
    raw_path = raw_dir / f"{stamp}.json"
    raw_path.write_text(json.dumps({"machine": info, "quick": args.quick,
                                    "results": {r["title"]: r["raw"] for r in results}},
                                   indent=2) + "\n")
    report = render(info, results, args.quick)
    if args.no_write:
        print(report)
        return 0
    args.output.write_text(report)
    progress(f"wrote {args.output} (raw numbers: {raw_path.relative_to(ROOT)})")
    for r in results:
        print(f"\n## {r['title']}\n\n{r['markdown']}")
    rows = summary_rows(results)
    if rows:
        print("\n" + "\n".join(summary_table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
