"""`trainhub metrics`: a job's whole metric history (every page) as a table, CSV or JSON."""
import csv
import json
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from cli import output
from cli.client import Api, CliError, KeyOption, UrlOption
from cli.ids import job_path
from cli.jobs import JobArg

CSV_COLUMNS = ("name", "epoch", "batch", "step", "value", "time")
PAGE = 10_000  # GET /jobs/{id}/metrics' largest limit


def register(app: typer.Typer) -> None:
    app.command("metrics", rich_help_panel="Jobs")(metrics)


def points(api: Api, job_id: str, name: str | None) -> Iterator[dict[str, Any]]:
    since = None
    path = job_path(api, job_id, "/metrics")
    while True:
        page = api.get(path, name=name, since_step=since, limit=PAGE)
        yield from page["metrics"]
        since = page.get("next_since_step")
        if since is None:
            return


def metrics(
    job_id: JobArg,
    name: Annotated[str | None, typer.Option(
        help="one metric: loss, train_loss, train_accuracy, eval_loss, eval_accuracy, "
             "val_loss, val_accuracy, samples_per_second, lr")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV: name,epoch,batch,step,value,time")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="a JSON list of the points")] = False,
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """A job's metric history, in step order."""
    if as_csv and as_json:
        raise CliError("--csv and --json: choose one")
    with Api(url, key) as api:
        if as_csv:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for point in points(api, job_id, name):
                writer.writerow(["" if point.get(c) is None else point[c]
                                 for c in CSV_COLUMNS])
            return
        history = list(points(api, job_id, name))
    if as_json:
        output.line(json.dumps(history, indent=2))
        return
    if not history:
        output.line("no metric points yet" + (f" named {name}" if name else ""))
        return
    t = output.table("name", "epoch", "batch", "step", "value", "time")
    for p in history:
        t.add_row(p["name"], str(p["epoch"]), str(p["batch"]), str(p["step"]),
                  output.value(p["name"], p["value"]), output.when(p["time"]))
    output.show(t)
