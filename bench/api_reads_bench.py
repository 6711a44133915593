"""Reads at the database's speed (issue #12 part 4): a real `trainhub api` (auth on, its
admin key) on a fresh Postgres database, one job with 100,000 metric points.

Measures:
  - reading all the points over HTTP in pages of 10,000 (min / median / max of a few runs);
  - `GET /jobs/{id}` and `GET /jobs/{id}/metrics?limit=100` with wrk (16 connections):
    req/s and p99 from wrk's --latency output;
  - `POST /jobs` from 200 clients at once (Postgres + Redis as the broker, on a queue of
    its own that no worker consumes): p50 / p99 of the API's answers, a burst with the admin
    key and one with a tenant's key (a user made with `trainhub admin create-user` /
    `create-key`; its per-key `POST /jobs` rate limit and its cap of active jobs raised for
    the benchmark, not switched off). After each burst, exactly once: every answer a 201
    with its own job id; the database holds one job per request (by its unique name) and no
    other, queued, enqueued_at set, the key's user its owner; the broker's queue gained one
    message per job. A violation fails the benchmark (RuntimeError).
The wrk runs and the POST bursts repeat --reads-runs times (3, quick 1): min / median / max,
targets judged on the medians.

Env: BENCH_PG (a Postgres server's admin URL), BENCH_REDIS (the Redis for events and broker).
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from post_burst import TENANT, Burst, post_at_once

TITLE = "API reads: metric history, GET /jobs/{id}, POST /jobs at once (Postgres, auth on)"
ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14")
PAGE = 10_000
TARGETS = {"history_s": 0.3, "job_rps": 1500, "job_p99_ms": 50, "metrics_rps": 800,
           "post_p99_ms": 250}
# The tenant's raised limits (TRAINHUB_RATE_LIMIT_JOBS_PER_MINUTE and
# TRAINHUB_TENANT_MAX_ACTIVE_JOBS): far above what the bursts submit, yet counted as usual.
TENANT_RAISED = 1_000_000
KEYS = ("admin", "tenant")


def add_arguments(parser) -> None:
    parser.add_argument("--reads-points", type=int, default=None,
                        help="metric points seeded (default 100,000; quick 20,000)")
    parser.add_argument("--reads-duration", type=int, default=None,
                        help="seconds per wrk run (default 10, quick 2)")
    parser.add_argument("--reads-clients", type=int, default=None,
                        help="concurrent POST /jobs clients (default 200, quick 50)")
    parser.add_argument("--reads-runs", type=int, default=None,
                        help="wrk runs per URL and POST bursts, for min / median / max "
                             "(default 3, quick 1)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_api(env: dict, log, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`trainhub api` on a free port, once its /health answers 200."""
    base = f"http://127.0.0.1:{_free_port()}"
    api = subprocess.Popen([sys.executable, "-m", "cli", "api", "--port", base.rsplit(":", 1)[1]],
                           cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(450):  # 90 s
        if api.poll() is not None:
            break
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return api, base
        except httpx.HTTPError:
            time.sleep(0.2)
    api.kill()
    raise RuntimeError(f"the API did not start: {log_path.read_text()[-3000:]}")


def _wrk_binary(progress) -> str | None:
    found = shutil.which("wrk")
    if found:
        return found
    progress("wrk is missing: trying apt-get install wrk")
    for cmd in (["apt-get", "install", "-y", "wrk"], ["sudo", "-n", "apt-get", "install", "-y", "wrk"]):
        try:
            subprocess.run(cmd, capture_output=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if shutil.which("wrk"):
            return shutil.which("wrk")
    return None


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def _wrk(wrk: str, url: str, key: str, seconds: int) -> dict:
    done = subprocess.run([wrk, "-t", "2", "-c", "16", "-d", f"{seconds}s", "--latency",
                           "-H", f"Authorization: Bearer {key}", url],
                          capture_output=True, text=True, timeout=seconds + 60)
    out = done.stdout
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if bad:
        raise RuntimeError(f"wrk saw {bad.group(1)} error answers from {url}:\n{out}")
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99,
            "socket_errors": errors.group(0) if errors else None}


def run(args, progress) -> dict:
    import psycopg

    n_points = args.reads_points or (20_000 if args.quick else 100_000)
    seconds = args.reads_duration or (2 if args.quick else 10)
    n_clients = args.reads_clients or (50 if args.quick else 200)
    runs = 3 if args.quick else 5
    repeats = args.reads_runs or (1 if args.quick else 3)
    db = f"trainhub_bench_reads_{uuid.uuid4().hex[:8]}"
    queue = f"bench-reads-{uuid.uuid4().hex[:8]}"  # no worker consumes it
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db
    broker = REDIS.rsplit("/", 1)[0] + "/13"
    tmp = Path(tempfile.mkdtemp(prefix="trainhub-bench-reads-"))
    env = {**os.environ, "TRAINHUB_DATABASE_URL": db_url, "TRAINHUB_REDIS_URL": REDIS,
           "TRAINHUB_BROKER_URL": broker, "TRAINHUB_QUEUE": queue,
           "TRAINHUB_DATA_DIR": str(tmp), "PYTHONUNBUFFERED": "1", "TRAINHUB_AUTH": "on",
           "TRAINHUB_TENANT_MAX_ACTIVE_JOBS": str(TENANT_RAISED),
           "TRAINHUB_RATE_LIMIT_JOBS_PER_MINUTE": str(TENANT_RAISED)}
    log = open(tmp / "api.log", "wb")
    api = None
    try:
        api, base = _start_api(env, log, tmp / "api.log")
        keys = {"admin": (tmp / "admin.key").read_text().strip(),
                "tenant": _tenant_key(env)}
        raw = _measure(base, db_url, keys, n_points, seconds, n_clients, runs, repeats,
                       progress, Burst(db_url, broker, queue))
        errors = [line for line in (tmp / "api.log").read_text(errors="replace").splitlines()
                  if "Error" in line or "Traceback" in line]
        raw["api_log_errors"] = errors[:20]
    finally:
        if api is not None:
            api.terminate()
            try:
                api.wait(timeout=30)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait()
        log.close()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        _drop_queue(broker, queue)
        shutil.rmtree(tmp, ignore_errors=True)
    raw.update(points=n_points, wrk_seconds=seconds, clients=n_clients, quick=args.quick,
               repeats=repeats)
    return {"title": TITLE, "markdown": _markdown(raw), "raw": raw, "summary": summary(raw)}


def _tenant_key(env: dict) -> str:
    """A tenant made as an operator does: `trainhub admin create-user`, then `create-key`
    (its key alone on the last line)."""
    for args in (["create-user", TENANT], ["create-key", TENANT]):
        done = subprocess.run([sys.executable, "-m", "cli", "admin", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"trainhub admin {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def _drop_queue(broker: str, queue: str) -> None:
    try:
        import redis

        client = redis.Redis.from_url(broker)
        for name in client.scan_iter(match=f"*{queue}*"):
            client.delete(name)
    except Exception:  # noqa: BLE001 - cleanup only
        pass


def _measure(base, db_url, keys, n_points, seconds, n_clients, runs, repeats,
             progress, burst) -> dict:
    import psycopg

    key = keys["admin"]
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
        made = client.post("/jobs", json={"model": "lenet", "dataset": "digits"})
        made.raise_for_status()
        job_id = made.json()["id"]
    progress(f"seeding {n_points} metric points for job {job_id}")
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as conn:
        # A running job (what a dashboard polls): GET /jobs/{id} needs no worker lookup.
        conn.execute("UPDATE jobs SET status = 'running', started_at = now(), epoch = 1, "
                     "step = %s WHERE id = %s", (n_points, job_id))
        conn.execute("INSERT INTO metric_points (job_id, name, epoch, batch, step, value, time) "
                     "SELECT %s, 'loss', 1 + s / 1000, s %% 1000, s, 1.0 / s, "
                     "now() - (%s - s) * interval '1 millisecond' "
                     "FROM generate_series(1, %s) AS s", (job_id, n_points, n_points))
        conn.execute("ANALYZE metric_points")

    def read_all() -> tuple[float, int]:
        got, since = 0, None
        started = time.perf_counter()
        with httpx.Client(base_url=base, headers=auth, timeout=60) as c:
            while True:
                params = {"limit": PAGE, **({"since_step": since} if since is not None else {})}
                resp = c.get(f"/jobs/{job_id}/metrics", params=params)
                resp.raise_for_status()
                page = resp.json()
                got += len(page["metrics"])
                since = page["next_since_step"]
                if since is None:
                    break
        return time.perf_counter() - started, got

    read_all()  # warm: the server's caches, the connection pool
    times = []
    for _ in range(runs):
        elapsed, got = read_all()
        if got != n_points:
            raise RuntimeError(f"read {got} points, expected {n_points}")
        times.append(elapsed)
    history = {"min_s": min(times), "median_s": statistics.median(times), "max_s": max(times)}
    progress(f"history of {n_points} points: median {history['median_s']:.3f} s")

    wrk = _wrk_binary(progress)
    job_reads, metrics_reads = [], []
    if wrk is None:
        progress("wrk could not be installed: the wrk figures are skipped")
    for i in range(repeats if wrk else 0):  # the two URLs in turn, `repeats` times
        job_reads.append(_wrk(wrk, f"{base}/jobs/{job_id}", key, seconds))
        progress(f"GET /jobs/{{id}} ({i + 1}/{repeats}): {job_reads[-1]['rps']:.0f} req/s, "
                 f"p99 {job_reads[-1]['p99_ms']} ms")
        metrics_reads.append(_wrk(wrk, f"{base}/jobs/{job_id}/metrics?limit=100", key,
                                  seconds))
        progress(f"GET /jobs/{{id}}/metrics?limit=100 ({i + 1}/{repeats}): "
                 f"{metrics_reads[-1]['rps']:.0f} req/s, p99 {metrics_reads[-1]['p99_ms']} ms")

    posts: dict[str, list[dict]] = {who: [] for who in KEYS}
    for i in range(repeats):  # the two keys in turn, `repeats` times
        for who in KEYS:
            tag = f"{who}-{i + 1}"
            before = burst.queued()
            post = asyncio.run(post_at_once(base, {"Authorization": f"Bearer {keys[who]}"},
                                             n_clients, tag))
            burst.check(tag, who, post.pop("answers"), before)
            posts[who].append(post)
            progress(f"POST /jobs x{n_clients} at once, {who} key ({i + 1}/{repeats}): p50 "
                     f"{post['p50_ms']:.0f} ms, p99 {post['p99_ms']:.0f} ms, answers "
                     f"{post['statuses']}; exactly once")
    return {"history": history, "history_runs_s": times,
            "job": _over_runs(job_reads) if job_reads else None, "job_runs": job_reads,
            "metrics_page": _over_runs(metrics_reads) if metrics_reads else None,
            "metrics_page_runs": metrics_reads,
            "post": {who: _over_runs(posts[who]) for who in KEYS}, "post_runs": posts,
            "exactly_once": {"bursts": burst.bursts, "jobs": burst.jobs},
            "wrk": wrk is not None}


def _over_runs(runs: list[dict]) -> dict:
    """min / median / max of each number over the runs; answers' statuses added up."""
    out: dict = {}
    for name, value in runs[0].items():
        if isinstance(value, (int, float)):
            values = [r[name] for r in runs]
            out[name] = {"min": min(values), "median": statistics.median(values),
                         "max": max(values)}
    statuses: dict[str, int] = {}
    for r in runs:
        for code, n in (r.get("statuses") or {}).items():
            statuses[code] = statuses.get(code, 0) + n
    if statuses:
        out["statuses"] = statuses
    return out


def _mmm(s: dict, fmt: str = "{:,.0f}") -> str:
    return " / ".join(fmt.format(s[k]) for k in ("min", "median", "max"))


def _markdown(raw: dict) -> str:
    h, t = raw["history"], TARGETS
    lines = [
        f"One `trainhub api` process (auth on, admin key), Postgres, {raw['points']:,} points "
        f"of one job; wrk 16 connections x {raw['wrk_seconds']} s; {raw['clients']} POST "
        f"clients at once, with the admin key and with a tenant's; each wrk URL and each "
        f"key's POST burst {raw['repeats']} time(s), min / median / max over them. Shared, "
        "noisy machine: figures vary run to run.",
        "",
        "| measure | result (min / median / max) | target |",
        "|---|---|---|",
        f"| read {raw['points']:,} points, pages of {PAGE:,} | "
        f"{h['min_s']:.3f} / {h['median_s']:.3f} / {h['max_s']:.3f} s | ≤ {t['history_s']} s |",
    ]
    for label, key, target in (("`GET /jobs/{id}`", "job", f"≥ {t['job_rps']:,} req/s, "
                                f"p99 ≤ {t['job_p99_ms']} ms"),
                               ("`GET /jobs/{id}/metrics?limit=100`", "metrics_page",
                                f"≥ {t['metrics_rps']} req/s")):
        r = raw[key]
        result = (f"{_mmm(r['rps'])} req/s; p50 {_mmm(r['p50_ms'], '{:.1f}')} ms; "
                  f"p99 {_mmm(r['p99_ms'], '{:.1f}')} ms" if r else "skipped (no wrk)")
        lines.append(f"| {label} | {result} | {target} |")
    for who in KEYS:
        p = raw["post"][who]
        lines.append(f"| `POST /jobs`, {raw['clients']} at once, {who} key | p50 "
                     f"{_mmm(p['p50_ms'])} ms; p99 {_mmm(p['p99_ms'])} ms | "
                     f"p99 ≤ {t['post_p99_ms']} ms |")
    once = raw["exactly_once"]
    lines += [
        "",
        f"The tenant: a user `{TENANT}` and its key, made with `trainhub admin create-user` "
        "and `create-key` against the bench's database. Its limits are raised for the "
        "benchmark, through the product's settings, not switched off (so each of its "
        "submissions still counts them): `TRAINHUB_RATE_LIMIT_JOBS_PER_MINUTE` (default 60 a "
        f"key) and `TRAINHUB_TENANT_MAX_ACTIVE_JOBS` (default 20) are {TENANT_RAISED:,}; "
        "`TRAINHUB_TENANT_MAX_STORED_BYTES` keeps its default (queued jobs store nothing). "
        "The admin key is exempt from all three.",
        "",
        f"Exactly once: checked after each of the {once['bursts']} bursts ({once['jobs']:,} "
        "submissions): every answer a 201 with its own job id; the database holds exactly "
        "one job per request (its unique name `bench-<key>-<run>-<i>`) and no other, each "
        "`queued` with `enqueued_at` set and the key's user its owner; the Redis queue "
        "gained exactly one `trainhub.run_job` message per job id. Met (a violation fails "
        "the benchmark).",
    ]
    return "\n".join(lines) + "\n"


def summary(raw: dict) -> list[dict]:
    """Rows of the report's summary table (bench/run.py), judged on the medians; P3 read's
    MLflow reference comes from ingest_bench."""
    h, t, job, page, post = (raw["history"], TARGETS, raw["job"], raw["metrics_page"],
                             raw["post"])
    history = {"min": h["min_s"], "median": h["median_s"], "max": h["max_s"]}
    rows = [{"key": "P3-read", "figure": f"P3: read {raw['points']:,} points over HTTP "
             f"(pages of {PAGE:,}), s", "trainhub": _mmm(history, "{:.3f}"),
             "target": f"≤ {t['history_s']}", "met": h["median_s"] <= t["history_s"],
             "result": f"median {h['median_s']:.3f} s"}]
    if job is None:
        rows.append({"key": "P4-job", "figure": "P4: GET /jobs/{id}, wrk 16 connections",
                     "trainhub": "skipped (no wrk)", "met": None})
        rows.append({"key": "P4-metrics", "figure": "P4: GET /jobs/{id}/metrics?limit=100",
                     "trainhub": "skipped (no wrk)", "met": None})
    else:
        job_met = (job["rps"]["median"] >= t["job_rps"]
                   and job["p99_ms"]["median"] <= t["job_p99_ms"])
        rows.append({"key": "P4-job", "figure": "P4: GET /jobs/{id}, wrk 16 connections",
                     "trainhub": f"{_mmm(job['rps'])} req/s; p99 "
                                 f"{_mmm(job['p99_ms'], '{:.1f}')} ms",
                     "target": f"≥ {t['job_rps']:,} req/s, p99 ≤ {t['job_p99_ms']} ms",
                     "met": job_met, "result": f"{job['rps']['median']:,.0f} req/s, p99 "
                                               f"{job['p99_ms']['median']:.1f} ms"})
        rows.append({"key": "P4-metrics", "figure": "P4: GET /jobs/{id}/metrics?limit=100, "
                     "wrk 16 connections", "trainhub": f"{_mmm(page['rps'])} req/s",
                     "target": f"≥ {t['metrics_rps']} req/s",
                     "met": page["rps"]["median"] >= t["metrics_rps"],
                     "result": f"{page['rps']['median']:,.0f} req/s"})
    for who in KEYS:  # a burst that was not exactly once raised: no row to judge
        p = post[who]
        rows.append({"key": "post-jobs" if who == "admin" else f"post-jobs-{who}",
                     "figure": f"POST /jobs, {raw['clients']} clients at once, {who} key",
                     "trainhub": f"p50 {_mmm(p['p50_ms'])} ms; p99 {_mmm(p['p99_ms'])} ms",
                     "target": f"p99 ≤ {t['post_p99_ms']} ms, each exactly once",
                     "met": p["p99_ms"]["median"] <= t["post_p99_ms"],
                     "result": f"p99 {p['p99_ms']['median']:.0f} ms"})
    return rows
