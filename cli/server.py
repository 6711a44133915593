"""Server verbs: up (API + worker), api, worker, migrate."""
import logging
import os
import socket
import sys
from typing import Annotated

import typer

from cli.gpu_workers import ALL, EACH, GpuChoiceError, placements
from cli.supervise import start, supervise

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
               help="worker node name (default: trainhub@host)")] = None,
           gpus: Annotated[str, typer.Option(
               help="'each': one worker process per GPU, pinned with CUDA_VISIBLE_DEVICES; "
                    "'all': one worker holding every GPU (multi-GPU jobs); or GPU indices "
                    "such as 0,1 for one worker holding those")] = EACH) -> None:
    configure_logging()
    raise typer.Exit(run_worker(concurrency, queue, name, gpus))


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
    from core.artifacts import check_store_or_exit
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
    log.info("%s", check_store_or_exit())  # one `error:` line and exit 1 if unusable
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


def run_worker(concurrency: int, queue: str | None, name: str | None, gpus: str = EACH) -> int:
    import torch

    name = name or "trainhub@" + socket.gethostname()
    # Same call as torch.cuda.is_available(): it counts without making a CUDA context, so
    # the pool processes forked below can still use the GPU.
    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        plan = placements(gpus, gpu_count, name)
    except GpuChoiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    if len(plan) == 1 and plan[0].visible_devices is None:
        run_celery_worker(concurrency, queue, plan[0].name, plan[0].gpu_count)
        return 0
    # CUDA_VISIBLE_DEVICES only takes effect in a process that has not yet counted its
    # GPUs, and this one has: each pinned worker is a child process of its own.
    base = [sys.executable, "-m", "cli", "worker", f"--concurrency={concurrency}",
            "--gpus", ALL] + (["--queue", queue] if queue else [])
    children = {p.name: start(base + ["--name", p.name],
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": p.visible_devices})
                for p in plan}
    for p in plan:
        logging.getLogger("trainhub").info("worker %s on GPU %s", p.name, p.visible_devices)
    return supervise(children, "the GPU workers")


def run_celery_worker(concurrency: int, queue: str | None, name: str, gpu_count: int) -> None:
    from core.artifacts import check_store_or_exit
    from core.config import get_settings
    from core.routing import worker_queues
    from worker.celery_app import app

    settings = get_settings()
    logging.getLogger("trainhub").info("%s", check_store_or_exit())
    queues = queue or ",".join(worker_queues(settings.queue, gpu_count))
    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}",
            f"--queues={queues}", "--pool=prefork", f"--hostname={name}",
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
    children = {"worker": start(base + ["worker"]),
                "api": start(base + ["api", "--host", host, "--port", str(port)])}
    log.info("API on http://%s:%d (docs at /docs); Ctrl-C stops", host, port)
    return supervise(children, "API and worker")
