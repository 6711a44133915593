"""Server verbs: up (API + worker), api, worker, migrate."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

STOP_GRACE_SECONDS = 30


def add_commands(sub) -> None:
    up = sub.add_parser("up", help="start the API and one worker (Ctrl-C stops both)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    up.set_defaults(run=run_up)

    api = sub.add_parser("api", help="start the HTTP API (uvicorn)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    api.add_argument("--workers", type=int, default=1,
                     help="API processes (each holds its own /predict model cache)")
    api.set_defaults(run=run_api)

    worker = sub.add_parser("worker", help="start a Celery worker that runs training jobs")
    worker.add_argument("--concurrency", type=int, default=1,
                        help="jobs at once (one per GPU is the rule)")
    worker.add_argument("--queue", default=None, help="queue to consume (default: settings)")
    worker.add_argument("--name", default=None, help="worker node name (default: trainhub@host)")
    worker.set_defaults(run=run_worker)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date and exit")
    migrate.set_defaults(run=run_migrate)


def run_migrate(_args) -> int:
    from core.db import upgrade_schema

    upgrade_schema()
    logging.getLogger("trainhub").info("database schema is up to date")
    return 0


def run_api(args) -> int:
    import uvicorn

    uvicorn.run("api.main:app", host=args.host, port=args.port, log_config=None,
                timeout_graceful_shutdown=5, workers=args.workers)
    return 0


def run_worker(args) -> int:
    from core.config import get_settings
    from worker.celery_app import app

    settings = get_settings()
    argv = ["worker", "--loglevel=INFO", f"--concurrency={args.concurrency}",
            f"--queues={args.queue or settings.queue}", "--pool=prefork",
            f"--hostname={args.name or 'trainhub@' + socket.gethostname()}",
            # Jobs need no worker-to-worker chatter; it only costs broker round trips.
            "--without-gossip", "--without-mingle"]
    if settings.resolved_broker_url.startswith("filesystem://"):
        argv.append("--without-heartbeat")
    app.worker_main(argv)
    return 0


def run_up(args) -> int:
    """API and worker as two child processes; a signal to `up` is passed on to both."""
    from core.config import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger("trainhub")
    log.info("data dir %s; database %s; broker %s", settings.data_dir,
             settings.resolved_database_url, settings.resolved_broker_url)
    base = [sys.executable, "-m", "cli"]
    # Own sessions: a terminal's Ctrl-C reaches only `up`, which stops the children in order.
    children = {
        "worker": subprocess.Popen(base + ["worker"], start_new_session=True),
        "api": subprocess.Popen(base + ["api", "--host", args.host, "--port", str(args.port)],
                                start_new_session=True),
    }
    stopped_at: float | None = None

    def stop(signum, _frame):
        nonlocal stopped_at
        if stopped_at is not None:
            return
        stopped_at = time.monotonic()
        log.info("stopping API and worker")
        for proc in children.values():
            if proc.poll() is None:
                # The whole group: the worker's pool children stop their running job too.
                os.killpg(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    log.info("API on http://%s:%d (docs at /docs); Ctrl-C stops", args.host, args.port)
    code = 0
    while any(p.poll() is None for p in children.values()):
        for name, proc in children.items():
            if proc.poll() is not None and stopped_at is None:
                log.error("%s exited with code %s; stopping the rest", name, proc.returncode)
                code = proc.returncode or 1
                stop(signal.SIGTERM, None)
        if stopped_at is not None and time.monotonic() - stopped_at > STOP_GRACE_SECONDS:
            for proc in children.values():
                if proc.poll() is None:
                    log.warning("pid %d did not stop in %ds; killing it", proc.pid,
                                STOP_GRACE_SECONDS)
                    os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.2)
    return code
