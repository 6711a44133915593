"""`trainhub sweep submit|list|show|cancel|best|delete`: hyperparameter sweeps (searches whose
trials are ordinary jobs) from a JSON or YAML body, their trials as a table that `--follow`
redraws as they change, and the best trial's job id alone on a line."""
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from cli import ids, output
from cli.client import Api, CliError, KeyOption, Unreachable, UrlOption
from cli.sse import GIVE_UP_AFTER_S
from cli.submit import load_file, resolve_ids
from core.states import JobStatus, SweepStatus

ENDED = frozenset(s.value for s in SweepStatus if s.is_terminal)  # a sweep's ends
POLL_S = 1.0
JOBS_PAGE = 500  # GET /jobs' largest limit
SWEEPS_PAGE = 200  # GET /sweeps' largest limit

app = typer.Typer(help="Hyperparameter sweeps: searches whose trials are ordinary jobs.",
                  no_args_is_help=True)

SweepArg = Annotated[str, typer.Argument(metavar="SWEEP", show_default=False,
                                         help="a sweep's id (`sweep submit` printed it), or "
                                              "its start when that names one sweep")]
JsonOption = Annotated[bool, typer.Option("--json", help="as the API returns it")]


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="sweep", rich_help_panel="Sweeps")


def sweep_path(sweep_id: str, tail: str = "") -> str:
    return f"/sweeps/{quote(sweep_id.strip(), safe='')}{tail}"


def load_body(path: Path) -> dict[str, Any]:
    """The POST /sweeps body in a JSON or YAML file (read and checked as `submit`'s file)."""
    body = load_file(path, "sweep fields (base, space, strategy, metric, ...)")
    if not body:
        raise CliError(f"{path}: empty; expected a sweep (base, space, strategy, metric, ...)")
    return body


def trial_jobs(api: Api, sweep_id: str) -> list[dict[str, Any]]:
    """Every trial's job (every page of GET /jobs?sweep=), by trial number."""
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = api.get("/jobs", sweep=sweep_id, limit=JOBS_PAGE, cursor=cursor)
        jobs += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            return sorted(jobs, key=lambda job: trial_of(job).get("trial", -1))


def trial_of(job: dict[str, Any]) -> dict[str, Any]:
    return job.get("sweep") or {}


# ---- what a sweep and its trials look like --------------------------------------------------

def space_keys(sweep: dict[str, Any], jobs: list[dict[str, Any]] = ()) -> list[str]:
    """The paths the sweep samples: its space's, then any a trial has beyond them."""
    keys = list(((sweep.get("spec") or {}).get("space") or {}).keys())
    for job in jobs:
        keys += [k for k in trial_of(job).get("values") or {} if k not in keys]
    return keys


def label(key: str) -> str:
    """`hyperparameters.lr` as `lr`: a column header people read."""
    return key.removeprefix("hyperparameters.")


def sampled(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return v if isinstance(v, str) else json.dumps(v)


def values_text(values: dict[str, Any]) -> str:
    return " ".join(f"{label(k)}={sampled(v)}" for k, v in values.items())


class TrialRows:
    """Each trial as cells of a row: its number, job id (short), status, sampled values, the
    sweep's metric (an ended trial's final value; a running one's latest point, which
    refresh() reads from GET /jobs/{id}/metrics) and epochs."""

    def __init__(self, api: Api, sweep: dict[str, Any]):
        self.api, self.metric = api, sweep["metric"]
        self.latest: dict[str, tuple[int, float | None]] = {}  # job id -> (step, value)

    def refresh(self, jobs: list[dict[str, Any]]) -> None:
        """The running trials' points of the metric since those already read."""
        for job in jobs:
            if job["status"] != "running":
                continue
            since = self.latest.get(job["id"], (None, None))[0]
            points = self.api.get(f"/jobs/{quote(job['id'], safe='')}/metrics",
                                  name=self.metric, since_step=since)["metrics"]
            if points:
                self.latest[job["id"]] = (points[-1]["step"], points[-1]["value"])

    def headers(self, keys: list[str]) -> list[str]:
        return ["trial", "job", "status", *map(label, keys), self.metric, "epochs"]

    def value(self, job: dict[str, Any]) -> str:
        final = job.get("metrics") or {}
        if self.metric in final:
            return output.value(self.metric, final[self.metric])
        if job["id"] in self.latest:
            return output.value(self.metric, self.latest[job["id"]][1])
        return "-"

    def cells(self, job: dict[str, Any], keys: list[str]) -> list[str]:
        trial, values = trial_of(job), trial_of(job).get("values") or {}
        epochs = ((job.get("spec") or {}).get("hyperparameters") or {}).get("epochs")
        done = (job.get("progress") or {}).get("epoch") or 0
        return [str(trial.get("trial", "?")), job["id"][:8], job["status"],
                *(sampled(values[k]) if k in values else "-" for k in keys),
                self.value(job), f"{done}/{epochs}" if epochs else str(done)]

    def table(self, sweep: dict[str, Any], jobs: list[dict[str, Any]]) -> Table:
        keys = space_keys(sweep, jobs)
        t = output.table(*self.headers(keys), whole=("job", "status"))
        for job in jobs:
            cells = [escape(c) for c in self.cells(job, keys)]
            cells[2] = output.status(job["status"])
            t.add_row(*cells)
        if sweep.get("waiting"):  # why no new trial starts now
            t.caption = f"waiting: {escape(sweep['waiting'])}"
        return t

    def line(self, job: dict[str, Any], keys: list[str]) -> str:
        """A row as one plain line, `trial=0 job=3f2c9a1b status=running lr=0.01 ...`."""
        return " ".join(f"{h}={c}" for h, c in zip(self.headers(keys), self.cells(job, keys)))


def counts_text(sweep: dict[str, Any]) -> str:
    counts = sweep.get("trials") or {}
    shown = [f"{n} {state.value}" for state in JobStatus if (n := counts.get(state.value))]
    return f"{counts.get('created', 0)} of at most {sweep['max_trials']} created" + (
        f" ({', '.join(shown)})" if shown else "")


def best_text(sweep: dict[str, Any]) -> str:
    best = sweep.get("best")
    if not best:
        return "no trial has succeeded yet"
    epoch = f", epoch {best['epoch']}" if best.get("epoch") is not None else ""
    return (f"trial {best['trial']} (job {best['job_id']}{epoch}): "
            f"{sweep['metric']}={output.value(sweep['metric'], best.get('value'))} "
            + values_text(best.get("values") or {})).rstrip()


def aim_text(sweep: dict[str, Any]) -> str:
    keys = ", ".join(map(label, space_keys(sweep))) or "nothing"
    return (f"{sweep['strategy']} over {keys}, {sweep['mode']} {sweep['metric']}, up to "
            f"{sweep['max_trials']} trials, {sweep['max_concurrent']} at once")


def details(sweep: dict[str, Any], rows: TrialRows, jobs: list[dict[str, Any]]) -> Group:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("id", sweep["id"])
    grid.add_row("name", escape(sweep["name"]))
    grid.add_row("status", output.status(sweep["status"]))
    grid.add_row("search", escape(aim_text(sweep)))
    space = (sweep.get("spec") or {}).get("space") or {}
    grid.add_row("space", escape(" ".join(f"{k}={json.dumps(v)}" for k, v in space.items())))
    grid.add_row("trials", counts_text(sweep))
    grid.add_row("best", escape(best_text(sweep)))
    grid.add_row("epochs", f"{sweep.get('epochs_spent', 0)} trained "
                           f"({sweep.get('epochs_full', '?')} for a full search of its trials)")
    if sweep.get("waiting"):
        grid.add_row("waiting", escape(sweep["waiting"]))
    finished = sweep.get("finished_at")
    grid.add_row("times", f"created {output.when(sweep.get('created_at'))}"
                          + (f", finished {output.when(finished)}" if finished else ""))
    if sweep.get("error"):
        grid.add_row("error", f"[red]{escape(sweep['error'])}[/]")
    return Group(grid, "", rows.table(sweep, jobs)) if jobs else Group(grid)


# ---- following a sweep -------------------------------------------------------------------------

def print_changes(rows: TrialRows, sweep: dict[str, Any], jobs: list[dict[str, Any]],
                  printed: dict[str, str]) -> None:
    """Off a terminal: each trial's row as a line when it changed, and why the sweep waits."""
    keys = space_keys(sweep, jobs)
    lines = {job["id"]: rows.line(job, keys) for job in jobs}
    lines["waiting"] = f"waiting: {sweep['waiting']}" if sweep.get("waiting") else ""
    for key, text in lines.items():
        if printed.get(key, "") != text:
            printed[key] = text
            output.line(text or "no longer waiting")


def follow_sweep(api: Api, sweep: dict[str, Any], sleep=time.sleep) -> int:
    """Poll the sweep, then its trials (so trials read after it ended are final), about once
    a second until it ends: a table redrawn on a terminal, else print_changes. A dropped
    connection is retried for GIVE_UP_AFTER_S. The exit code: 0 when it succeeded, else 1."""
    rows, printed, failing_since = TrialRows(api, sweep), {}, None
    output.line(f"following sweep {sweep['id']} ({sweep['name']}): {aim_text(sweep)}")
    live = Live(console=output.console(), auto_refresh=False) if output.interactive() else None
    try:
        with live if live is not None else nullcontext():
            while True:
                try:
                    fresh = api.get(sweep_path(sweep["id"]))
                    jobs = trial_jobs(api, sweep["id"])
                    rows.refresh(jobs)
                except Unreachable:
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since > GIVE_UP_AFTER_S:
                        raise
                    sleep(POLL_S)
                    continue
                sweep, failing_since = fresh, None
                if live is not None:
                    live.update(rows.table(sweep, jobs), refresh=True)
                else:
                    print_changes(rows, sweep, jobs, printed)
                if sweep["status"] in ENDED:
                    break
                sleep(POLL_S)
    except KeyboardInterrupt:
        stopped = CliError(f"stopped following; sweep {sweep['id']} goes on "
                           f"(`trainhub sweep cancel {sweep['id']}` stops it)")
        stopped.exit_code = 130
        raise stopped from None
    return finish(sweep)


def finish(sweep: dict[str, Any]) -> int:
    if sweep["status"] == "succeeded":
        output.line(f"sweep {sweep['id']} succeeded: best {best_text(sweep)}")
        return 0
    why = f": {sweep['error']}" if sweep.get("error") else ""
    output.error_line(f"sweep {sweep['id']} {sweep['status']}{why}; best {best_text(sweep)}")
    return 1


# ---- the verbs ------------------------------------------------------------------------------

@app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(
        show_default=False, help="the sweep, JSON or YAML (the body POST /sweeps takes: base, "
                                 "space, strategy, metric, max_trials, ...)")],
    follow_it: Annotated[bool, typer.Option(
        "--follow", "-f", help="then show its trials live until it ends (exit code 0 when "
                               "it succeeded, 1 when not)")] = False,
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """Start a sweep; prints a summary, then the sweep id alone on the last line."""
    body = load_body(file)
    with Api(url, key) as api:
        if isinstance(body.get("base"), dict):
            resolve_ids(api, body["base"])
        sweep = api.post("/sweeps", json=body)
        output.line(f"submitted sweep {sweep['name']}: {aim_text(sweep)} ({sweep['status']})",
                    err=True)
        output.line(sweep["id"])
        if follow_it:
            raise typer.Exit(follow_sweep(api, sweep))


@app.command("list")
def list_sweeps(
    status: Annotated[str | None, typer.Option(
        help="only sweeps in this state: running, succeeded, failed, cancelled")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 20,
    as_json: JsonOption = False, url: UrlOption = None, key: KeyOption = None,
) -> None:
    """List sweeps, newest first."""
    sweeps: list[dict[str, Any]] = []
    cursor = None
    with Api(url, key) as api:
        while len(sweeps) < limit:
            page = api.get("/sweeps", status=status, cursor=cursor,
                           limit=min(SWEEPS_PAGE, limit - len(sweeps)))
            sweeps += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
    if as_json or not sweeps:
        output.line(json.dumps(sweeps, indent=2) if as_json
                    else "no sweeps" + (f" with status {status}" if status else ""))
        return
    t = output.table("id", "name", "status", "search", "trials", "best", "created",
                     whole=("id", "status", "created"))
    for s in sweeps:
        best = s.get("best")
        t.add_row(s["id"], escape(s["name"]), output.status(s["status"]),
                  f"{s['strategy']}, {s['mode']} {s['metric']}", counts_text(s),
                  output.value(s["metric"], best.get("value")) if best else "-",
                  output.when(s.get("created_at")))
    output.show(t)


@app.command("show")
def show(sweep_id: SweepArg, as_json: JsonOption = False,
         url: UrlOption = None, key: KeyOption = None) -> None:
    """One sweep: its search, trial counts, best trial, then a table of its trials."""
    with Api(url, key) as api:
        sweep = api.get(sweep_path(ids.sweep_id(api, sweep_id)))
        if as_json:
            output.line(json.dumps(sweep, indent=2))
            return
        rows, jobs = TrialRows(api, sweep), trial_jobs(api, sweep["id"])
        rows.refresh(jobs)
    output.show(details(sweep, rows, jobs))


@app.command("cancel")
def cancel(sweep_id: SweepArg, url: UrlOption = None, key: KeyOption = None) -> None:
    """Cancel a sweep: no new trial starts, and its queued and running trials are cancelled."""
    with Api(url, key) as api:
        sweep = api.post(sweep_path(ids.sweep_id(api, sweep_id), "/cancel"))
    output.line(f"sweep {sweep['id']} {sweep['status']}: {counts_text(sweep)}")


@app.command("best")
def best(sweep_id: SweepArg, url: UrlOption = None, key: KeyOption = None) -> None:
    """The best trial so far: a summary, then its job id alone on the last line (an error
    while no trial has succeeded)."""
    with Api(url, key) as api:
        sweep = api.get(sweep_path(ids.sweep_id(api, sweep_id)))
    if not sweep.get("best"):
        raise CliError(f"sweep {sweep['id']} ({sweep['status']}): no trial has succeeded yet; "
                       f"{counts_text(sweep)}")
    output.line(f"best {best_text(sweep)}")
    output.line(sweep["best"]["job_id"])


@app.command("delete")
def delete(sweep_id: SweepArg, url: UrlOption = None, key: KeyOption = None) -> None:
    """Delete an ended sweep and its trial jobs (not while it or a trial still runs)."""
    with Api(url, key) as api:
        whole = ids.sweep_id(api, sweep_id).strip()
        api.request("DELETE", sweep_path(whole))
    output.line(f"sweep {whole} deleted, with its trial jobs")
