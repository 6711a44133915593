"""Server verbs: up (API + worker), api, worker, migrate."""
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Annotated

import typer

STOP_GRACE_SECONDS = 30
# job_tag: " job=<id>" on every record logged while a job runs in that process.
LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s%(job_tag)s: %(message)s"


PANEL = "Server"
Host = Annotated[str, typer.Option("--host", help="address to listen on")]
# The port's default is $PORT when set (a platform that assigns one), else 8000.
Port = Annotated[int, typer.Option("--port", envvar="PORT", help="port to listen on")]


def register(app: typer.Typer) -> None:
    app.command("up", help="start the API and one worker (Ctrl-C stops both)",
                rich_help_panel=PANEL)(up)
    app.command("api", help="start the HTTP API (uvicorn)", rich_help_panel=PANEL)(api)
    app.command("worker", help="start a Celery worker that runs training jobs",
                rich_help_panel=PANEL)(worker)
    app.command("migrate", help="bring the database schema up to date and exit",
                rich_help_panel=PANEL)(migrate)


class JobTag(logging.Filter):
    """Fills %(job_tag)s from the record's job_id (set by the worker while a job runs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = getattr(record, "job_id", "-")
        record.job_tag = f" job={job_id}" if job_id != "-" else ""
        return True


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(JobTag())


def up(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    configure_logging()
    code = run_up(host, port)
    if code:
        raise typer.Exit(code)


def api(host: Host = "127.0.0.1", port: Port = 8000,
        workers: Annotated[int, typer.Option(
            help="API processes (each holds its own /predict model cache)")] = 1) -> None:
    configure_logging()
    run_api(host, port, workers)


def worker(concurrency: Annotated[int, typer.Option(
               help="jobs at once (one per GPU is the rule)")] = 1,
           queue: Annotated[str | None, typer.Option(
               help="queues to consume, comma-separated (default: by hardware: "
                    "$TRAINHUB_QUEUE.gpu or .cpu, and $TRAINHUB_QUEUE)")] = None,
           name: Annotated[str | None, typer.Option(
               help="worker node name (default: trainhub@host)")] = None) -> None:
    configure_logging()
    run_worker(concurrency, queue, name)


def migrate() -> None:
    configure_logging()
    run_migrate()


def run_migrate() -> None:
    from core.db import upgrade_schema

    upgrade_schema()
    logging.getLogger("trainhub").info("database schema is up to date")


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def prepare_api(host: str) -> None:
    """Before the API answers: refuse auth off on a reachable address, bring the schema up
    to date, and make the first admin key when there is no admin (its path is printed, the
    key never is)."""
    from core import auth
    from core.config import get_settings
    from core.db import session_scope, upgrade_schema

    settings = get_settings()
    log = logging.getLogger("trainhub")
    if settings.auth == "off":
        if host not in LOOPBACK:
            typer.echo(f"error: TRAINHUB_AUTH=off is refused with --host {host}: without "
                       "authentication the API must listen on 127.0.0.1 only", err=True)
            raise typer.Exit(1)
        log.warning("AUTHENTICATION IS OFF (TRAINHUB_AUTH=off): anyone who can reach "
                    "%s is an admin", host)
    upgrade_schema()
    key_file = settings.admin_key_file
    with session_scope() as session:
        created = auth.ensure_admin_key(session, key_file)
    if created:
        log.info("created user admin and its API key in %s (mode 600). The CLI on this "
                 "machine uses it by itself; elsewhere: export TRAINHUB_API_KEY=$(cat %s), or "
                 "send `Authorization: Bearer <key>`. Log in to the web page with it.",
                 key_file, key_file)


def run_api(host: str, port: int, workers: int) -> None:
    import uvicorn

    prepare_api(host)

    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # GET /metrics adds up every process's series through files in one folder, which
        # must start empty; the processes inherit the variable.
        import shutil

        from core.config import get_settings

        folder = get_settings().data_dir / "prometheus" / str(port)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)

    uvicorn.run("api.main:app", host=host, port=port, log_config=None,
                timeout_graceful_shutdown=5, workers=workers)


def run_worker(concurrency: int, queue: str | None, name: str | None) -> None:
    import torch

    from core.config import get_settings
    from core.routing import worker_queues
    from worker.celery_app import app

    settings = get_settings()
    queues = queue or ",".join(worker_queues(settings.queue, torch.cuda.is_available()))
    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}",
            f"--queues={queues}", "--pool=prefork",
            f"--hostname={name or 'trainhub@' + socket.gethostname()}",
            # Jobs need no worker-to-worker chatter; it only costs broker round trips.
            "--without-gossip", "--without-mingle"]
    if settings.resolved_broker_url.startswith("filesystem://"):
        argv.append("--without-heartbeat")
    app.worker_main(argv)


def run_up(host: str, port: int) -> int:
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
        "api": subprocess.Popen(base + ["api", "--host", host, "--port", str(port)],
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
    log.info("API on http://%s:%d (docs at /docs); Ctrl-C stops", host, port)
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
