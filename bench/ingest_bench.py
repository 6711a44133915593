"""Metric ingest: points/s through the worker's sink into PostgreSQL, against MLflow's server.

100,000 points handed to worker.sink.JobReporter(job_id, settings, redis_client).metrics()
one per call (as the training loop hands them), then one flush(), which returns once every
point is committed; timed from the first metrics() call to flush()'s return, into a fresh
database on the local PostgreSQL (created and dropped here), with Redis (every point also
published) and without. The reference: an MLflow 3 tracking server (`mlflow server`) on the
same PostgreSQL, MlflowClient.log_batch of 1,000 metrics per call; then the time its
get_metric_history takes to read those points back (P3 read's reference; trainhub's read is
api_reads_bench's). MLflow is installed into its own virtual environment (BENCH_MLFLOW_VENV,
default ~/.cache/trainhub-bench/venv-mlflow) by the full run, with pip as this machine has it
configured (about 40 s); --quick skips it unless it is already there."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path
from unittest import mock

TITLE = "Metric ingest: points/s through the worker's sink into PostgreSQL (vs MLflow)"
ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14")
MLFLOW_VENV = Path(os.environ.get("BENCH_MLFLOW_VENV",
                                  Path.home() / ".cache" / "trainhub-bench" / "venv-mlflow"))
MLFLOW_SPEC = "mlflow==3.*"
TARGET = 300_000
NAMES = ("loss", "lr", "samples_per_second", "train_accuracy")


def add_arguments(parser) -> None:
    parser.add_argument("--ingest-points", type=int, default=None,
                        help="points per run (default 100000, quick 10000)")
    parser.add_argument("--ingest-runs", type=int, default=None,
                        help="runs per configuration (default 3, quick 1)")
    parser.add_argument("--ingest-no-mlflow", action="store_true",
                        default=os.environ.get("BENCH_INGEST_NO_MLFLOW", "") not in ("", "0"),
                        help="skip the MLflow reference")


def _pg_url(db: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + db


def _create_db(prefix: str) -> str:
    import psycopg

    db = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    return db


def _drop_db(db: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _sink_run(n: int, with_redis: bool) -> float:
    from sqlalchemy import func, select

    from core import events, jobs
    from core.config import get_settings
    from core.db import session_scope
    from core.jobspec import JobSpec
    from core.tables import MetricPoint
    from worker.reporting import Metric
    from worker.sink import JobReporter

    settings = get_settings()
    with session_scope() as session:
        job_id = jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved()).id
    client = events.connect(settings.redis_url) if with_redis else None
    points = [Metric(NAMES[i % 4], 1, i // 4, i // 4, 1.0 / (i + 1)) for i in range(n)]
    reporter = JobReporter(job_id, settings, client)
    try:
        started = time.perf_counter()
        for p in points:
            reporter.metrics([p])
        reporter.flush()
        elapsed = time.perf_counter() - started
    finally:
        reporter.close()
    with session_scope() as session:
        stored = session.scalar(select(func.count()).select_from(MetricPoint)
                                .where(MetricPoint.job_id == job_id))
    if client is not None:
        published = sum(e["type"] == "metric" for e in events.stored_events(client, job_id))
        client.delete(events.stream_key(job_id))
        if published != n:  # the stream's cap counts entries, each up to 1,000 points
            raise RuntimeError(f"{published} metric events published for {n} points")
    if stored != n:
        raise RuntimeError(f"{stored} of {n} points stored")
    return n / elapsed


def _summary(rates: list[float]) -> dict:
    return {"min": min(rates), "median": statistics.median(rates), "max": max(rates),
            "runs": rates}


# -- MLflow --------------------------------------------------------------------------------

_MLFLOW_CLIENT = textwrap.dedent("""
    import json, sys, time
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    uri, n, per_call = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    names = ("loss", "lr", "samples_per_second", "train_accuracy")
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(f"bench-{time.time_ns()}")
    run = client.create_run(exp)
    now = int(time.time() * 1000)
    points = [Metric(names[i % 4], 1.0 / (i + 1), now, i // 4) for i in range(n)]
    started = time.perf_counter()
    for i in range(0, n, per_call):
        client.log_batch(run.info.run_id, metrics=points[i:i + per_call])
    elapsed = time.perf_counter() - started
    client.set_terminated(run.info.run_id)
    started = time.perf_counter()  # P3's read reference: the same points back
    read = sum(len(client.get_metric_history(run.info.run_id, name)) for name in names)
    read_seconds = time.perf_counter() - started
    print(json.dumps({"points": n, "seconds": elapsed, "read_points": read,
                      "read_seconds": read_seconds}))
""")


def _mlflow_ready(progress, install: bool) -> str | None:
    """None when MLflow's server can run; else why not (for the markdown)."""
    mlflow = MLFLOW_VENV / "bin" / "mlflow"
    if mlflow.exists():
        return None
    if not install:
        return f"not installed in {MLFLOW_VENV} (the full run installs it)"
    progress(f"installing {MLFLOW_SPEC} into {MLFLOW_VENV} (a few minutes)")
    try:
        MLFLOW_VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True,
                       capture_output=True, timeout=300)
        subprocess.run([str(MLFLOW_VENV / "bin" / "pip"), "install", "-q", MLFLOW_SPEC,
                        "psycopg2-binary"], check=True, capture_output=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return (f"could not be installed ({exc}; "
                f"{detail.decode(errors='replace').strip()[-300:]})")
    return None


def _wait_healthy(url: str, server: subprocess.Popen, log_path: Path) -> None:
    for _ in range(360):  # three minutes
        if server.poll() is not None:
            break
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.5)
    raise RuntimeError(f"the MLflow server did not start: {log_path.read_text()[-2000:]}")


def _mlflow_run(n: int, runs: int, progress) -> tuple[list[float], list[float]]:
    """(points/s of log_batch, seconds of get_metric_history over the same points), a run each."""
    db = _create_db("trainhub_bench_mlflow")
    tmp = Path(tempfile.mkdtemp(prefix="trainhub-bench-mlflow-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "server.log", "wb")
    server = subprocess.Popen(
        [str(MLFLOW_VENV / "bin" / "mlflow"), "server", "--backend-store-uri",
         # psycopg2, installed with MLflow (SQLAlchemy 2.1's default driver is psycopg 3)
         _pg_url(db).replace("postgresql://", "postgresql+psycopg2://", 1),
         "--default-artifact-root", (tmp / "artifacts").as_uri(), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(f"{uri}/health", server, tmp / "server.log")
        rates, reads = [], []
        for i in range(runs):
            out = subprocess.run([str(MLFLOW_VENV / "bin" / "python"), "-c", _MLFLOW_CLIENT,
                                  uri, str(n), "1000"], check=True, capture_output=True,
                                 timeout=1800, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rates.append(result["points"] / result["seconds"])
            if result["read_points"] != n:
                raise RuntimeError(f"MLflow read back {result['read_points']} of {n} points")
            reads.append(result["read_seconds"])
            progress(f"MLflow run {i + 1}: {rates[-1]:,.0f} points/s; read back in "
                     f"{reads[-1]:.2f} s")
        return rates, reads
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.communicate(timeout=30)
        log.close()
        _drop_db(db)


# -- the benchmark --------------------------------------------------------------------------

def run(args, progress) -> dict:
    n = args.ingest_points or (10_000 if args.quick else 100_000)
    runs = args.ingest_runs or (1 if args.quick else 3)
    db = _create_db("trainhub_bench_ingest")
    tmp = Path(tempfile.mkdtemp(prefix="trainhub-bench-ingest-"))
    env = {"TRAINHUB_DATABASE_URL": _pg_url(db), "TRAINHUB_REDIS_URL": REDIS,
           "TRAINHUB_DATA_DIR": str(tmp)}
    from core.config import get_settings
    from core.db import reset_engine, upgrade_schema

    sink: dict[str, dict] = {}
    try:
        with mock.patch.dict(os.environ, env):
            get_settings.cache_clear()
            reset_engine()
            upgrade_schema()
            _sink_run(min(n, 2000), True)  # warm-up: connections, the staging table
            for label, with_redis in (("with Redis", True), ("without Redis", False)):
                rates = []
                for i in range(runs):
                    rates.append(_sink_run(n, with_redis))
                    progress(f"sink {label}, run {i + 1}: {rates[-1]:,.0f} points/s")
                sink[label] = _summary(rates)
    finally:
        reset_engine()
        get_settings.cache_clear()
        _drop_db(db)

    mlflow: dict | None = None
    mlflow_read: dict | None = None
    mlflow_note = "skipped (--ingest-no-mlflow)"
    if not args.ingest_no_mlflow:
        why_not = _mlflow_ready(progress, install=not args.quick)
        if why_not is None:
            rates, reads = _mlflow_run(n, runs, progress)
            mlflow, mlflow_read, mlflow_note = _summary(rates), _summary(reads), ""
        else:
            mlflow_note = f"MLflow {why_not}"
            progress(mlflow_note)

    def row(label: str, s: dict) -> str:
        return (f"| {label} | {s['min']:,.0f} | **{s['median']:,.0f}** | {s['max']:,.0f} |")

    lines = [
        f"{n:,} points handed to the worker's reporter one per metrics() call, then one "
        "flush() (returns once every point is committed), into a fresh database on the local "
        f"PostgreSQL; {runs} run(s) each. The reporter's background writer stores each batch "
        "with COPY into a staging table + one INSERT ... SELECT ... ON CONFLICT DO NOTHING, "
        "and publishes it in one pipelined Redis XADD batch. Reference: MLflow 3 tracking "
        "server on the same PostgreSQL, log_batch of 1,000 metrics per call.", "",
        "| points/s | min | median | max |", "|---|---:|---:|---:|",
        row("sink → Postgres + Redis", sink["with Redis"]),
        row("sink → Postgres (no Redis)", sink["without Redis"])]
    if mlflow is not None:
        lines.append(row("MLflow server, log_batch 1,000", mlflow))
    best = sink["without Redis"]["median"]
    lines += ["", f"Target ≥ {TARGET:,} points/s without Redis: "
              f"{'met' if best >= TARGET else 'NOT met'} ({best:,.0f})."]
    if mlflow is not None:
        lines.append(f"Median vs MLflow: {best / mlflow['median']:.1f}× without Redis, "
                     f"{sink['with Redis']['median'] / mlflow['median']:.1f}× with Redis.")
        lines += ["", f"P3's read reference: MLflow `get_metric_history` of the same {n:,} "
                  f"points (its {len(NAMES)} metrics), right after logging them: "
                  f"{mlflow_read['min']:.2f} / **{mlflow_read['median']:.2f}** / "
                  f"{mlflow_read['max']:.2f} s (min / median / max); trainhub's read is in "
                  "the API reads section."]
    else:
        lines.append(f"MLflow reference: {mlflow_note}.")
    raw = {"points": n, "runs": runs, "sink": sink, "mlflow": mlflow,
           "mlflow_read_seconds": mlflow_read, "mlflow_note": mlflow_note or None}
    return {"title": TITLE, "markdown": "\n".join(lines), "raw": raw,
            "summary": summary(raw)}


def summary(raw: dict) -> list[dict]:
    """Rows of the report's summary table (bench/run.py); P3 read's trainhub figure comes
    from api_reads_bench, its MLflow reference from here."""
    mlflow, read = raw["mlflow"], raw["mlflow_read_seconds"]
    reference = (f"MLflow log_batch 1,000: {_mmm(mlflow)}" if mlflow else raw["mlflow_note"])
    rows = []
    for key, label in (("without Redis", "no Redis"), ("with Redis", "with Redis")):
        s = raw["sink"][key]
        rows.append({"key": f"P3-ingest-{label.replace(' ', '-').lower()}",
                     "figure": f"P3: {raw['points']:,} points through the sink into Postgres "
                               f"({label}), points/s",
                     "trainhub": _mmm(s), "reference": reference,
                     "target": f"≥ {TARGET:,}", "met": s["median"] >= TARGET,
                     "result": (f"{s['median'] / mlflow['median']:.1f}× MLflow" if mlflow
                                else f"{s['median'] / TARGET:.2f}× the target")})
    rows.append({"key": "P3-read",
                 "reference": (f"MLflow get_metric_history: {_mmm(read, '{:.2f}')} s" if read
                               else raw["mlflow_note"])})
    return rows


def _mmm(s: dict, fmt: str = "{:,.0f}") -> str:
    return " / ".join(fmt.format(s[k]) for k in ("min", "median", "max"))
