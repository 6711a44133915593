"""`trainhub list`, `show` and `cancel`: jobs as a table, one job in full, a cancel request;
an upload is shown by its name."""
import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli import output
from cli.client import Api, KeyOption, UrlOption
from cli.ids import FULL_ID, job_path

PAGE_MAX = 500  # GET /jobs' largest limit

JobArg = Annotated[str, typer.Argument(
    metavar="JOB", help="the job's id, or the start of it that names one job", show_default=False)]


def register(app: typer.Typer) -> None:
    app.command("list", rich_help_panel="Jobs")(list_jobs)
    app.command("show", rich_help_panel="Jobs")(show)
    app.command("cancel", rich_help_panel="Jobs")(cancel)


def list_jobs(
    status: Annotated[str | None, typer.Option(
        help="only jobs in this state: queued, running, succeeded, failed, cancelled")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 20,
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """List jobs, newest first."""
    jobs: list[dict[str, Any]] = []
    cursor = None
    with Api(url, key) as api:
        while len(jobs) < limit:
            page = api.get("/jobs", status=status, limit=min(PAGE_MAX, limit - len(jobs)),
                           cursor=cursor)
            jobs += page["jobs"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if not jobs:
            output.line("no jobs" + (f" with status {status}" if status else ""))
            return
        names = dataset_names(api, jobs)
    t = output.table("id", "name", "status", "model", "dataset", "progress", "created",
                     whole=("id", "status", "created"))
    for job in jobs:
        t.add_row(job["id"], escape(job["name"]), output.status(job["status"]), job["model"],
                  escape(names.get(job["dataset"], job["dataset"])), output.progress(job),
                  output.when(job["created_at"]))
    output.show(t)
    if cursor:
        output.line(f"(more jobs: --limit {limit * 2})", err=True)


def dataset_names(api: Api, jobs: list[dict[str, Any]]) -> dict[str, str]:
    """The names of the jobs' uploaded datasets by id (a built-in's id is its name): one
    GET /datasets when some job trains on an upload. A deleted upload has none."""
    if not any(FULL_ID.fullmatch(job["dataset"]) for job in jobs):
        return {}
    return {d["id"]: d["name"] for d in api.get("/datasets")["datasets"]
            if d["source"] == "upload"}


def dataset_label(job: dict[str, Any], names: dict[str, str]) -> str:
    """An upload as `name (id)`, a built-in by its name."""
    ref = job["dataset"]
    return f"{names[ref]} ({ref})" if ref in names else ref


def job_details(job: dict[str, Any], names: dict[str, str] | None = None) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    status = output.status(job["status"])
    if job.get("cancel_requested") and job["status"] == "running":
        status += " (cancel requested)"
    grid.add_row("id", job["id"])
    grid.add_row("name", escape(job["name"]))
    grid.add_row("status", status)
    grid.add_row("dataset", escape(dataset_label(job, names or {})))
    grid.add_row("progress", output.progress(job))
    attempt = f"{job.get('attempts', 0)} of at most {job.get('max_attempts', '?')}"
    if job.get("worker"):
        attempt += f" on {escape(job['worker'])} ({job.get('device') or '?'})"
    grid.add_row("attempts", attempt)
    times = [f"created {output.when(job.get('created_at'))}"]
    if job.get("started_at"):
        times.append(f"started {output.when(job['started_at'])}")
    if job.get("finished_at"):
        times.append(f"finished {output.when(job['finished_at'])}")
    grid.add_row("times", ", ".join(times))
    spec = dict(job.get("spec") or {})
    hp = spec.pop("hyperparameters", {}) or {}
    grid.add_row("spec", escape(" ".join(f"{k}={json.dumps(v)}" for k, v in spec.items()
                                         if k != "name")))
    grid.add_row("hyperparameters", " ".join(f"{k}={json.dumps(v)}" for k, v in hp.items()))
    metrics = job.get("metrics") or {}
    grid.add_row("metrics", " ".join(f"{k}={output.value(k, v)}"
                                     for k, v in sorted(metrics.items())) or "-")
    if job.get("error"):
        grid.add_row("error", f"[red]{escape(job['error'])}[/]")
    return grid


def show(job_id: JobArg,
         as_json: Annotated[bool, typer.Option("--json", help="the job as the API returns it")]
         = False,
         url: UrlOption = None, key: KeyOption = None) -> None:
    """Show one job: status, progress, spec, final metrics, error."""
    with Api(url, key) as api:
        job = api.get(job_path(api, job_id))
        names = {} if as_json else dataset_names(api, [job])
    output.show_resource(job, as_json, lambda j: job_details(j, names))


def cancel(job_id: JobArg, url: UrlOption = None, key: KeyOption = None) -> None:
    """Cancel a job: a queued one at once, a running one at its next check."""
    with Api(url, key) as api:
        job = api.post(job_path(api, job_id, "/cancel"))
    if job["status"] == "cancelled":
        output.line(f"job {job['id']} cancelled")
    else:
        output.line(f"job {job['id']} is {job['status']}: cancel requested; it stops at its "
                    "next check (`trainhub follow` shows the end)")
