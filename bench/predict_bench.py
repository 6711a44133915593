"""POST /predict: latency (one client), throughput (many clients) and one large batch.

Starts trainhub in embedded mode (`python -m cli up`, SQLite + filesystem broker in a
fresh temporary data dir), trains LeNet on the digits dataset through the API, then sends
PNGs of the digits test split to POST /predict. Every response must be a 200 and top-1
accuracy over all requests must be >= MIN_ACCURACY: a benchmark of wrong answers is worthless.

Run it through bench/run.py (`make bench`); `run(args, progress)` is the module interface.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

TITLE = "POST /predict"
ROOT = Path(__file__).resolve().parent.parent

JOB = {"model": "lenet", "dataset": "digits",
       "hyperparameters": {"epochs": 3, "batch_size": 4, "optimizer": "adam", "lr": 0.001,
                           "log_every": 100}}
MIN_ACCURACY = 0.9
SERVER_TIMING = re.compile(r"\bapp;dur=([0-9.]+)")
REMOVED_ENV = ("TRAINHUB_DATABASE_URL", "TRAINHUB_BROKER_URL", "TRAINHUB_REDIS_URL")

# name: (full run, --quick run)
DEFAULTS = {"requests": (1000, 100), "warmup": (50, 10), "clients": (16, 16),
            "duration": (15.0, 3.0), "batch_size": (64, 64), "batch_repeats": (20, 3),
            "runs": (3, 2)}

# Headline figures of one run: (key, label, unit, better, issue #12's target or None,
# the figure before server-side micro-batching, from issue #12 (idle machine)).
HEADLINES = [
    ("one_server_p50", "1 client: server p50", "ms", "lower", 1.5, 1.42),
    ("one_client_p50", "1 client: client p50", "ms", "lower", None, 2.24),
    ("many_images_per_s", "16 one-image clients: images/s", "images/s", "higher", 800.0, 351.0),
    ("many_client_p99", "16 one-image clients: client p99", "ms", "lower", 50.0, 156.0),
    ("batch_client_p50", "64 images in one request: client p50", "ms", "lower", None, 5.9),
]


def add_arguments(parser) -> None:
    group = parser.add_argument_group(f"{TITLE} (env: BENCH_PREDICT_<NAME>)")
    group.add_argument("--requests", type=int, help="sequential latency requests "
                       "(default 1000, quick 100)")
    group.add_argument("--warmup", type=int, help="warm-up requests before the latency run, "
                       "not recorded (default 50, quick 10)")
    group.add_argument("--clients", type=int, help="concurrent clients for throughput "
                       "(default 16)")
    group.add_argument("--duration", type=float, help="seconds of the throughput run "
                       "(default 15, quick 3)")
    group.add_argument("--batch-size", type=int, help="images in the batch request (default "
                       "64, the server's TRAINHUB_PREDICT_MAX_IMAGES)")
    group.add_argument("--batch-repeats", type=int, help="timed batch requests, after one "
                       "warm-up (default 20, quick 3)")
    group.add_argument("--runs", type=int, help="times the three phases run on the same "
                       "server, for min/median/max (default 3, quick 2)")
    group.add_argument("--keep-data", action="store_true",
                       help="keep the temporary data dir (database, checkpoints, server log)")


def options(args) -> dict:
    """CLI flag, else BENCH_PREDICT_<NAME>, else the full/quick default."""
    opts = {}
    for name, (full, quick) in DEFAULTS.items():
        value = getattr(args, name, None)
        if value is None:
            env = os.environ.get(f"BENCH_PREDICT_{name.upper()}")
            value = type(full)(env) if env else (quick if args.quick else full)
        if value <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be > 0, got {value}")
        opts[name] = value
    return opts


# -- the server ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Child processes, recursively (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [p.decode(errors="replace") for p in f.read().split(b"\0") if p]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (not its children), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine has been busy (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores kept busy over a phase: the API process, the rest of the server (idle worker,
    `up`), this benchmark process (clients), and everything else on the machine."""

    def __init__(self, server: "Server"):
        self.server = server

    def __enter__(self) -> "CpuMeter":
        self.t0, self.bench0 = time.perf_counter(), time.process_time()
        self.server0, self.machine0 = self.server.cpu_seconds(), machine_busy_seconds()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t0
        server1 = self.server.cpu_seconds()
        bench = (time.process_time() - self.bench0) / wall
        rest = (server1["rest"] - self.server0["rest"]) / wall
        api = (None if server1["api"] is None or self.server0["api"] is None
               else (server1["api"] - self.server0["api"]) / wall)
        machine = (machine_busy_seconds() - self.machine0) / wall
        self.cores = {"api": api, "server_rest": rest, "bench": bench, "machine": machine,
                      "other": max(0.0, machine - bench - rest - (api or 0.0))}


def cpu_note(cores: dict | None) -> str:
    if not cores:
        return ""
    api = "?" if cores["api"] is None else f"{cores['api']:.2f}"
    return (f"CPU cores busy during the run: API process {api}, idle worker and `up` "
            f"{cores['server_rest']:.2f}, benchmark clients {cores['bench']:.2f}, other "
            f"processes on the machine {cores['other']:.2f} (of {os.cpu_count()}).")


def admin_headers(data_dir: Path) -> dict[str, str]:
    """The admin key the server made at start (authentication on, as users run it; an admin
    key is exempt from the rate limits a benchmark would otherwise hit)."""
    return {"Authorization": f"Bearer {(data_dir / 'admin.key').read_text().strip()}"}


# Set when the server is up: every client of this benchmark sends it.
AUTH_HEADERS: dict[str, str] = {}


class Server:
    """`trainhub up` on a free port with a fresh data dir; stopped with SIGINT to its group."""

    def __init__(self, progress, keep_data: bool = False):
        self.progress, self.keep_data = progress, keep_data
        self.data_dir = Path(tempfile.mkdtemp(prefix="trainhub-bench-"))
        self.log_path = self.data_dir / "server.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.api_pid: int | None = None

    def __enter__(self) -> "Server":
        env = {k: v for k, v in os.environ.items() if k not in REMOVED_ENV}
        env["TRAINHUB_DATA_DIR"] = str(self.data_dir)
        env["TRAINHUB_AUTH"] = "on"  # as users run it; clients send the admin key
        env["PYTHONUNBUFFERED"] = "1"
        python = ROOT / ".venv" / "bin" / "python"
        self.log = open(self.log_path, "wb")
        self.progress(f"starting trainhub up on port {self.port} (data dir {self.data_dir})")
        self.proc = subprocess.Popen(
            [str(python if python.exists() else sys.executable), "-m", "cli", "up",
             "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            self._wait_healthy(timeout=120)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.headers = admin_headers(self.data_dir)
        AUTH_HEADERS.update(self.headers)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        started = time.monotonic()
        last = None
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"trainhub up exited with code {self.proc.returncode} "
                                   f"before /health answered\n{self.log_tail()}")
            try:
                resp = httpx.get(f"{self.base}/health", timeout=5)
                if resp.status_code == 200:
                    self.progress(f"server healthy after {time.monotonic() - started:.1f} s")
                    self.api_pid = self._find_api_pid()
                    return
                last = f"{resp.status_code} {resp.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.25)
        raise RuntimeError(f"/health not 200 within {timeout:.0f} s (last: {last})\n"
                           f"{self.log_tail()}")

    def _find_api_pid(self) -> int | None:
        for pid in descendants(self.proc.pid):
            argv = cmdline(pid)
            if "cli" in argv and "api" in argv:
                return pid
        return None

    def cpu_seconds(self) -> dict:
        """CPU seconds used so far by the API process and by the rest of `up` (the idle
        worker and its pool, `up` itself)."""
        rest = 0.0
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            if pid != self.api_pid:
                rest += cpu_seconds(pid) or 0.0
        return {"api": cpu_seconds(self.api_pid) if self.api_pid else None, "rest": rest}

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "--- server log (tail) ---\n" + "\n".join(text[-lines:])

    def __exit__(self, *exc) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.progress("stopping the server (SIGINT to its process group)")
            kids = descendants(proc.pid)  # API and worker run in sessions of their own
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.progress("server did not stop within 60 s; killing it")
                for pid in [proc.pid, *kids]:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        if getattr(self, "log", None):
            self.log.close()
        if self.keep_data:
            self.progress(f"kept data dir {self.data_dir}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)


# -- the job and the images ----------------------------------------------------------------

def train(base: str, progress, timeout: float = 600) -> dict:
    progress("training the model: POST /jobs " + str(JOB))
    resp = httpx.post(f"{base}/jobs", json=JOB, timeout=30, headers=AUTH_HEADERS)
    if resp.status_code != 201:
        raise RuntimeError(f"POST /jobs answered {resp.status_code}: {resp.text}")
    job_id = resp.json()["id"]
    started = time.monotonic()
    last_report = 0.0
    while True:
        job = httpx.get(f"{base}/jobs/{job_id}", timeout=30, headers=AUTH_HEADERS).json()
        status = job["status"]
        if status == "succeeded":
            break
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"training job {job_id} ended {status}: {job.get('error')}")
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            raise RuntimeError(f"training job {job_id} still {status} after {timeout:.0f} s")
        if elapsed - last_report >= 5:
            p = job["progress"]
            progress(f"training: {status}, step {p['step']}/{p['total_steps']} "
                     f"({elapsed:.0f} s)")
            last_report = elapsed
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    progress(f"trained in {elapsed:.1f} s: eval_accuracy "
             f"{job['metrics'].get('eval_accuracy'):.4f}")
    return {"id": job_id, "train_seconds": elapsed, "metrics": job["metrics"],
            "device": job.get("device")}


def digit_pngs() -> tuple[list[bytes], np.ndarray]:
    """The digits test split as 8x8 grayscale PNGs (0-16 scaled to 0-255), and the labels."""
    from PIL import Image

    from worker.data import digits_split

    _x_train, x_test, _y_train, y_test = digits_split()
    pixels = np.rint(x_test * (255.0 / 16.0)).astype(np.uint8)
    pngs = []
    for image in pixels:
        buf = io.BytesIO()
        Image.fromarray(image, mode="L").save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return pngs, y_test.astype(int)


# -- requests ------------------------------------------------------------------------------

@dataclass
class Sample:
    status: int
    client_ms: float
    server_ms: float | None
    correct: int = 0  # images predicted right
    images: int = 0
    error: str | None = None


@dataclass
class Stats:
    samples: list[Sample] = field(default_factory=list)

    @property
    def errors(self) -> list[Sample]:
        return [s for s in self.samples if s.status != 200 or s.error]


def predict(client: httpx.Client, job_id: str, pngs: list[bytes], labels: list[int]) -> Sample:
    files = [("image", (f"digit{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
    data = {"job_id": job_id, "checkpoint": "best", "top_k": "5"}
    started = time.perf_counter()
    try:
        resp = client.post("/predict", data=data, files=files)
    except httpx.HTTPError as exc:
        return Sample(0, (time.perf_counter() - started) * 1000, None, error=repr(exc))
    client_ms = (time.perf_counter() - started) * 1000
    match = SERVER_TIMING.search(resp.headers.get("server-timing", ""))
    server_ms = float(match.group(1)) if match else None
    if resp.status_code != 200:
        return Sample(resp.status_code, client_ms, server_ms, error=resp.text[:300])
    try:
        predictions = resp.json()["predictions"]
        assert len(predictions) == len(labels), f"{len(predictions)} predictions"
        assert all(len(p) == 5 for p in predictions), "top_k 5 not honoured"
        correct = sum(int(p[0]["index"] == y) for p, y in zip(predictions, labels))
    except (AssertionError, KeyError, IndexError, TypeError, ValueError) as exc:
        return Sample(resp.status_code, client_ms, server_ms, error=f"bad body: {exc!r}")
    if server_ms is None:
        return Sample(resp.status_code, client_ms, None, error="no Server-Timing header")
    return Sample(200, client_ms, server_ms, correct, len(labels))


def new_client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=60, headers=AUTH_HEADERS)


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summary(values) -> dict:
    return {"p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99),
            "mean": float(np.mean(values)), "min": float(np.min(values)),
            "max": float(np.max(values))}


def run_latency(server, job_id, pngs, labels, n, warmup, progress) -> tuple[dict, Stats]:
    base = server.base
    stats = Stats()
    first_ms = None
    with new_client(base) as client:
        progress(f"latency: {warmup} warm-up requests")
        for i in range(warmup):
            s = predict(client, job_id, [pngs[i % len(pngs)]], [labels[i % len(pngs)]])
            if s.error:
                raise RuntimeError(f"warm-up request {i} failed: {s.status} {s.error}")
            if i == 0:
                first_ms = s.client_ms
        step = max(1, n // 5)
        with CpuMeter(server) as meter:
            for i in range(n):
                k = (warmup + i) % len(pngs)
                stats.samples.append(predict(client, job_id, [pngs[k]], [labels[k]]))
                if (i + 1) % step == 0 or i + 1 == n:
                    progress(f"latency: {i + 1}/{n} requests")
    ok = [s for s in stats.samples if not s.error]
    return {"requests": n, "warmup": warmup, "first_request_ms": first_ms,
            "server_ms": summary([s.server_ms for s in ok]),
            "client_ms": summary([s.client_ms for s in ok]), "cpu_cores": meter.cores}, stats


def run_throughput(server, job_id, pngs, labels, clients, duration, progress
                   ) -> tuple[dict, Stats]:
    base = server.base
    per_client: list[list[Sample]] = [[] for _ in range(clients)]
    ready, go = threading.Barrier(clients + 1), threading.Event()
    deadline = [0.0]
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            with new_client(base) as client:
                # One untimed request: opens the connection before the clock starts.
                k = index % len(pngs)
                s = predict(client, job_id, [pngs[k]], [labels[k]])
                if s.error:
                    raise RuntimeError(f"client {index} warm-up failed: {s.status} {s.error}")
                ready.wait()
                go.wait()
                i = index * 7919  # clients start at different images
                while time.perf_counter() < deadline[0]:
                    k = i % len(pngs)
                    per_client[index].append(predict(client, job_id, [pngs[k]], [labels[k]]))
                    i += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
            ready.abort()
            go.set()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    progress(f"throughput: {clients} clients connecting")
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"throughput clients failed to start: {failures!r}") from None
    meter = CpuMeter(server).__enter__()
    t0 = time.perf_counter()
    deadline[0] = t0 + duration
    go.set()
    next_report = t0 + 5
    while any(t.is_alive() for t in threads):
        time.sleep(0.1)
        now = time.perf_counter()
        if now >= next_report or not any(t.is_alive() for t in threads):
            done = sum(len(c) for c in per_client)
            progress(f"throughput: {min(now - t0, duration):.0f}/{duration:g} s, "
                     f"{done} requests")
            next_report += 5
        if now - t0 > duration + 120:
            raise RuntimeError("throughput clients did not finish 120 s after the deadline")
    wall = time.perf_counter() - t0
    meter.__exit__(None, None, None)
    if failures:
        raise RuntimeError(f"throughput clients failed: {failures!r}")
    stats = Stats([s for c in per_client for s in c])
    ok = [s for s in stats.samples if not s.error]
    return {"clients": clients, "duration_s": duration, "wall_s": wall,
            "requests": len(stats.samples), "errors": len(stats.errors),
            "requests_per_s": len(ok) / wall,
            "images_per_s": sum(s.images for s in ok) / wall,
            "client_ms": summary([s.client_ms for s in ok]),
            "server_ms": summary([s.server_ms for s in ok]),
            "per_client_requests": [len(c) for c in per_client],
            "cpu_cores": meter.cores}, stats


def run_batch(base, job_id, pngs, labels, size, repeats, progress) -> tuple[dict, Stats]:
    stats = Stats()
    with new_client(base) as client:
        def one(r: int) -> Sample:
            idx = [(r * size + j) % len(pngs) for j in range(size)]
            return predict(client, job_id, [pngs[i] for i in idx], [labels[i] for i in idx])

        warm = one(0)
        if warm.error:
            raise RuntimeError(f"batch warm-up failed: {warm.status} {warm.error}")
        for r in range(repeats):
            stats.samples.append(one(r + 1))
        progress(f"batch: {repeats} requests of {size} images")
    ok = [s for s in stats.samples if not s.error]
    client, server = summary([s.client_ms for s in ok]), summary([s.server_ms for s in ok])
    return {"images": size, "repeats": repeats, "client_ms": client, "server_ms": server,
            "images_per_s": size / (client["p50"] / 1000),
            "images_per_s_server": size / (server["p50"] / 1000)}, stats


# -- the benchmark -------------------------------------------------------------------------

def run(args, progress) -> dict:
    opts = options(args)
    pngs, labels = digit_pngs()
    labels = [int(y) for y in labels]
    progress(f"{len(pngs)} test images as PNG ({sum(map(len, pngs)) / len(pngs):.0f} "
             f"bytes on average); options {opts}")
    runs: list[dict] = []
    everything: list[Sample] = []
    with Server(progress, keep_data=args.keep_data) as server:
        job = train(server.base, progress)
        for number in range(opts["runs"]):
            progress(f"run {number + 1} of {opts['runs']}")
            latency, lat_stats = run_latency(server, job["id"], pngs, labels,
                                             opts["requests"], opts["warmup"], progress)
            throughput, thr_stats = run_throughput(server, job["id"], pngs, labels,
                                                   opts["clients"], opts["duration"], progress)
            batch, batch_stats = run_batch(server.base, job["id"], pngs, labels,
                                           opts["batch_size"], opts["batch_repeats"], progress)
            everything += lat_stats.samples + thr_stats.samples + batch_stats.samples
            runs.append({"latency": latency, "throughput": throughput, "batch": batch,
                         "headlines": headlines(latency, throughput, batch)})
            progress("run {}: {}".format(number + 1, ", ".join(
                f"{label} {runs[-1]['headlines'][key]:.2f}"
                for key, label, *_ in HEADLINES)))

    errors = [s for s in everything if s.status != 200 or s.error]
    images = sum(s.images for s in everything)
    accuracy = sum(s.correct for s in everything) / images if images else 0.0
    checks = {"responses": len(everything), "errors": len(errors), "images": images,
              "top1_accuracy": accuracy}
    progress(f"checks: {len(everything)} responses, {len(errors)} errors, top-1 accuracy "
             f"{accuracy:.4f} over {images} images")
    if errors:
        sample = "; ".join(f"{s.status} {s.error}" for s in errors[:5])
        raise RuntimeError(f"{len(errors)} of {len(everything)} /predict requests failed: "
                           f"{sample}")
    if accuracy < MIN_ACCURACY:
        raise RuntimeError(f"top-1 accuracy {accuracy:.4f} < {MIN_ACCURACY}: the server "
                           "answers, but wrongly; these timings would mean nothing")
    last = runs[-1]
    raw = {"options": opts, "job": job, "latency": last["latency"],
           "throughput": last["throughput"], "batch": last["batch"], "checks": checks,
           "runs": [r["headlines"] for r in runs], "summary": summarize(runs)}
    return {"title": TITLE, "raw": raw, "markdown": markdown(raw),
            "summary": report_rows(raw["summary"])}


def report_rows(rows: list[dict]) -> list[dict]:
    """The headline figures as rows of the report's summary table (bench/run.py)."""
    return [{"key": f"P5-{row['key']}", "figure": f"P5: /predict LeNet, {row['label']}"
             + ("" if row["label"].endswith(row["unit"]) else f" ({row['unit']})"),
             "trainhub": f"{row['min']:.2f} / {row['median']:.2f} / "
                                             f"{row['max']:.2f}",
             "reference": f"issue #12 before: {row['before']:g}",
             "target": "" if row["target"] is None else
                       f"{'≤' if row['better'] == 'lower' else '≥'} {row['target']:g}",
             "met": row["met"], "result": f"median {row['median']:.2f}"} for row in rows]


def headlines(latency: dict, throughput: dict, batch: dict) -> dict[str, float]:
    return {"one_server_p50": latency["server_ms"]["p50"],
            "one_client_p50": latency["client_ms"]["p50"],
            "many_images_per_s": throughput["images_per_s"],
            "many_client_p99": throughput["client_ms"]["p99"],
            "batch_client_p50": batch["client_ms"]["p50"]}


def summarize(runs: list[dict]) -> list[dict]:
    """Per headline figure: min, median and max over the runs, and whether the median meets
    issue #12's target (None where it sets none)."""
    rows = []
    for key, label, unit, better, target, before in HEADLINES:
        values = [r["headlines"][key] for r in runs]
        median = float(np.median(values))
        met = None if target is None else (
            median <= target if better == "lower" else median >= target)
        rows.append({"key": key, "label": label, "unit": unit, "better": better,
                     "target": target, "before": before, "min": min(values),
                     "median": median, "max": max(values), "met": met})
    return rows


def summary_markdown(rows: list[dict], runs: int) -> list[str]:
    lines = [f"### Summary: {runs} runs on one server (min / median / max)", "",
             "| figure | before (issue #12) | min | median | max | target | met |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        target = "" if row["target"] is None else (
            f"{'≤' if row['better'] == 'lower' else '≥'} {row['target']:g} {row['unit']}")
        met = "" if row["met"] is None else ("yes" if row["met"] else "**no**")
        lines.append(f"| {row['label']} ({row['unit']}) | {row['before']:g} "
                     f"| {row['min']:.2f} | {row['median']:.2f} | {row['max']:.2f} "
                     f"| {target} | {met} |")
    missed = [r["label"] for r in rows if r["met"] is False]
    lines += ["", "Not met (median): " + ("; ".join(missed) if missed else "none") + ". "
              "\"Before\" is issue #12's figure, taken on an idle machine before "
              "server-side micro-batching; a busy machine makes every figure worse.", ""]
    return lines


def markdown(r: dict) -> str:
    lat, thr, bat, chk, job = r["latency"], r["throughput"], r["batch"], r["checks"], r["job"]
    f = "{:.2f}".format

    def row(name, s):
        return f"| {name} | {f(s['p50'])} | {f(s['p90'])} | {f(s['p99'])} | {f(s['mean'])} |"

    per_client = thr["per_client_requests"]
    return "\n".join([
        *summary_markdown(r["summary"], len(r["runs"])),
        "Model: LeNet trained by the benchmark through the API (`POST /jobs` "
        f"`{JOB['model']}`/`{JOB['dataset']}`, {JOB['hyperparameters']['epochs']} epochs, "
        f"batch {JOB['hyperparameters']['batch_size']}, adam lr "
        f"{JOB['hyperparameters']['lr']}; {job['train_seconds']:.1f} s to train, "
        f"eval_accuracy {job['metrics'].get('eval_accuracy', float('nan')):.4f}). "
        "Requests: multipart `image` = one 8×8 grayscale PNG from the digits test split "
        "(360 images, cycled), `job_id`, `checkpoint=best`, `top_k=5`. Inference on CPU.",
        "",
        "The tables below are the last run's.",
        "",
        f"### Latency: 1 client, sequential, {lat['requests']} requests "
        f"(after {lat['warmup']} warm-up)",
        "",
        "| ms | p50 | p90 | p99 | mean |",
        "|---|---:|---:|---:|---:|",
        row("server (Server-Timing `app;dur`)", lat["server_ms"]),
        row("client (wall, request → response read)", lat["client_ms"]),
        "",
        f"First request after training (loads the checkpoint into the API process): "
        f"{f(lat['first_request_ms'])} ms client time. {cpu_note(lat['cpu_cores'])}",
        "",
        f"### Throughput: {thr['clients']} concurrent clients, {thr['duration_s']:g} s",
        "",
        "| requests | errors | requests/s | images/s | client p50 ms | client p99 ms "
        "| server p50 ms | server p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {thr['requests']} | {thr['errors']} | {thr['requests_per_s']:.1f} "
        f"| {thr['images_per_s']:.1f} | {f(thr['client_ms']['p50'])} "
        f"| {f(thr['client_ms']['p99'])} | {f(thr['server_ms']['p50'])} "
        f"| {f(thr['server_ms']['p99'])} |",
        "",
        f"One image per request, so images/s = requests/s. Requests per client: "
        f"{min(per_client)}–{max(per_client)}. One client sending back to back manages "
        f"{1000 / lat['client_ms']['mean']:.1f} requests/s (1000 / its mean latency), so "
        f"{thr['clients']} clients together get "
        f"{thr['requests_per_s'] * lat['client_ms']['mean'] / 1000:.2f}× that rate. "
        f"{cpu_note(thr['cpu_cores'])}",
        "",
        f"### Batch: {bat['images']} images in one request, {bat['repeats']} requests "
        "(after 1 warm-up)",
        "",
        "| ms | p50 | p90 | p99 | mean |",
        "|---|---:|---:|---:|---:|",
        row("server", bat["server_ms"]),
        row("client", bat["client_ms"]),
        "",
        f"**{bat['images_per_s']:.0f} images/s** at the median client time "
        f"({bat['images_per_s_server']:.0f} images/s at the median server time).",
        "",
        "### Checks",
        "",
        f"{chk['responses']} timed `/predict` responses, all 200 ({chk['errors']} errors); "
        f"top-1 accuracy {chk['top1_accuracy']:.4f} over {chk['images']} images against "
        f"the true labels (the run fails below {MIN_ACCURACY}).",
    ])
