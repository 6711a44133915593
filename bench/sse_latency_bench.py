"""Live progress: how long a metric point takes from the worker's flush to an SSE client.

Distributed mode, so it needs the local PostgreSQL and Redis (`make services`): a fresh
database, an API process (`python -m cli api`), and watchers on GET /jobs/{id}/events. This
process plays the worker: it claims a job and writes points through the worker's own
reporter (worker.sink.JobReporter), one flush per point; each watcher notes when each
point arrives. Latency = arrival time - the moment flush() was called (one clock)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

TITLE = "Live progress: point flush to SSE client (distributed mode)"
ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14")
TARGET_P99_MS = 250.0


def add_arguments(parser) -> None:
    parser.add_argument("--sse-points", type=int, default=None,
                        help="points written, one flush each (default 300, quick 40)")
    parser.add_argument("--sse-watchers", type=int, default=None,
                        help="concurrent SSE clients (default 20, quick 5)")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(args, progress) -> dict:
    import psycopg

    n_points = args.sse_points or (40 if args.quick else 300)
    n_watchers = args.sse_watchers or (5 if args.quick else 20)
    db = f"trainhub_bench_sse_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db
    tmp = Path(tempfile.mkdtemp(prefix="trainhub-bench-sse-"))
    env = {**os.environ, "TRAINHUB_DATABASE_URL": db_url, "TRAINHUB_REDIS_URL": REDIS,
           "TRAINHUB_BROKER_URL": REDIS.rsplit("/", 1)[0] + "/13",
           "TRAINHUB_DATA_DIR": str(tmp), "PYTHONUNBUFFERED": "1", "TRAINHUB_AUTH": "on"}
    # This process plays the worker on the same database; the modules after it get the
    # environment back (the finally below).
    saved = {k: os.environ.get(k) for k in ("TRAINHUB_DATABASE_URL", "TRAINHUB_REDIS_URL",
                                            "TRAINHUB_BROKER_URL", "TRAINHUB_DATA_DIR")}
    os.environ.update({k: env[k] for k in saved})
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "api.log", "wb")
    api = subprocess.Popen([sys.executable, "-m", "cli", "api", "--port", str(port)], cwd=ROOT,
                           env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise RuntimeError(f"the API did not start: {(tmp / 'api.log').read_text()}")
            time.sleep(0.2)
        auth = {"Authorization": f"Bearer {(tmp / 'admin.key').read_text().strip()}"}
        return _measure(base, n_points, n_watchers, progress, auth)
    finally:
        api.terminate()
        api.wait(timeout=30)
        log.close()
        from core.config import get_settings
        from core.db import reset_engine

        reset_engine()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _measure(base: str, n_points: int, n_watchers: int, progress, auth: dict) -> dict:
    from core import events, jobs
    from core.config import get_settings
    from core.db import session_scope
    from core.jobspec import JobSpec
    from core.states import JobStatus
    from worker.reporting import Metric
    from worker.sink import JobReporter

    settings = get_settings()
    with session_scope() as session:
        job_id = jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved()).id
    with session_scope() as session:
        attempt = jobs.claim(session, job_id, "bench@sse", "cpu", 600).attempts
    arrivals: list[dict[int, float]] = [{} for _ in range(n_watchers)]
    ready = threading.Barrier(n_watchers + 1)

    def watch(i: int) -> None:
        with httpx.stream("GET", f"{base}/jobs/{job_id}/events", timeout=120,
                          headers=auth) as resp:
            first = True
            for line in resp.iter_lines():
                if first:
                    first = False
                    ready.wait(timeout=60)
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    if data["type"] == "metric":
                        arrivals[i][data["step"]] = time.perf_counter()
                    elif data["type"] == "end":
                        return

    threads = [threading.Thread(target=watch, args=(i,), daemon=True)
               for i in range(n_watchers)]
    for t in threads:
        t.start()
    ready.wait(timeout=60)
    time.sleep(0.5)  # every watcher is past its history and tailing the stream
    reporter = JobReporter(job_id, settings, events.connect(settings.redis_url),
                           attempt=attempt)
    flushed: dict[int, float] = {}
    progress(f"{n_watchers} watchers; writing {n_points} points, one flush each")
    for step in range(1, n_points + 1):
        reporter.metrics([Metric("loss", 1, step, step, 1.0 / step)])
        flushed[step] = time.perf_counter()
        reporter.flush()
        time.sleep(0.02)
    with session_scope() as session:
        jobs.transition(session, job_id, JobStatus.succeeded, attempt=attempt)
    events.publish_or_warn(events.connect(settings.redis_url), job_id,
                           [{"type": "status", "status": "succeeded"}])
    for t in threads:
        t.join(timeout=60)
    latencies = [(seen[s] - flushed[s]) * 1000 for seen in arrivals for s in flushed
                 if s in seen]
    missing = n_points * n_watchers - len(latencies)
    if missing:
        raise RuntimeError(f"{missing} point arrivals missing")
    p50, p99 = statistics.median(latencies), _percentile(latencies, 0.99)
    progress(f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms")
    met = "met" if p99 <= TARGET_P99_MS else "NOT met"
    markdown = "\n".join([
        f"{n_points} points written by the worker's reporter (one flush each, 20 ms apart) "
        f"to a running job watched by {n_watchers} SSE clients at once; each arrival timed "
        "against the moment its flush began (the flush's database insert and Redis XADD "
        "included).", "",
        "| | p50 | p99 | max |", "|---|---:|---:|---:|",
        f"| flush → SSE client | {p50:.1f} ms | **{p99:.1f} ms** | {max(latencies):.1f} ms |",
        "", f"Target p99 ≤ {TARGET_P99_MS:.0f} ms: {met}."])
    summary = [{"key": "sse", "figure": f"Live progress: point flush → SSE client, "
                f"{n_watchers} watchers (one run)", "trainhub": f"p50 {p50:.1f} ms, p99 "
                f"{p99:.1f} ms", "target": f"p99 ≤ {TARGET_P99_MS:.0f} ms",
                "met": p99 <= TARGET_P99_MS, "result": f"p99 {p99:.1f} ms"}]
    return {"title": TITLE, "markdown": markdown, "summary": summary,
            "raw": {"points": n_points, "watchers": n_watchers, "p50_ms": p50, "p99_ms": p99,
                    "max_ms": max(latencies)}}
