"""`trainhub logs JOB [-f]`: the job's own log lines, and with -f new ones as they come."""
import time
from typing import Annotated

import typer

from cli import output
from cli.client import Api, KeyOption, UrlOption
from cli.ids import job_path
from cli.jobs import JobArg
from core.states import TERMINAL

# The statuses a follower stops at, as the API writes them (core.states is their one home).
ENDED = frozenset(status.value for status in TERMINAL)
FOLLOW_POLL_S = 1.0


def register(app: typer.Typer) -> None:
    app.command("logs", rich_help_panel="Jobs")(logs)


def logs(
    job: JobArg,
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="keep printing new lines until the job ends")]
    = False,
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """Print the job's log lines (claim, dataset, epochs, warnings, the error), oldest first."""
    since = 0
    with Api(url, key) as api:
        path = job_path(api, job, "/logs")
        while True:
            page = api.get(path, since=since, limit=1000)
            for line in page["lines"]:
                stamp = line["time"].replace("T", " ")[:23]
                output.line(f"{stamp} {line['level']:<7} {line['message']}")
            since = page["next_since"]
            if page["lines"] and len(page["lines"]) == 1000:
                continue  # more lines are waiting: no pause
            if not follow or page["status"] in ENDED:
                return
            time.sleep(FOLLOW_POLL_S)
