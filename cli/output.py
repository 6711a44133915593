"""What the client verbs print: rich tables and bars on a terminal, plain flushed lines
elsewhere, and small formatters."""
import json
import os
import sys
from datetime import datetime

import typer
from rich.console import Console
from rich.table import Table

# Off a terminal rich would wrap tables at 80 columns and cut ids; pipes get wide tables.
PIPE_WIDTH = 200


def interactive() -> bool:
    """Live progress bars only when stdout is a terminal (whatever FORCE_COLOR says);
    pipes, files and tests get plain lines."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def console() -> Console:
    """A console on the current sys.stdout (a test runner may have swapped it)."""
    width = None if interactive() or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(file=sys.stdout, width=width, highlight=False, soft_wrap=False)


def line(text: str = "", err: bool = False) -> None:
    """One plain line (no markup, no wrapping), flushed at once: safe in a pipe."""
    typer.echo(text, err=err)


def error_line(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def table(*columns: str, title: str | None = None, whole: tuple[str, ...] = ()) -> Table:
    """A table whose cells fold when it is too wide, but for the columns named in whole
    (ids, which people copy: a folded one pastes as two): those keep their full width, and
    the others fold more."""
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False,
              header_style="bold")
    for name in columns:
        if name in whole:
            t.add_column(name, no_wrap=True, overflow="ignore")
        else:
            t.add_column(name, overflow="fold")
    return t


def show(renderable) -> None:
    console().print(renderable)


def show_resource(resource: dict, as_json: bool, render) -> None:
    """A resource as the API returned it (--json), or as render(resource) draws it."""
    if as_json:
        line(json.dumps(resource, indent=2))
    else:
        show(render(resource))


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def when(text: str | None) -> str:
    """An API timestamp in local time, to the second."""
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def value(name: str, v: float | None) -> str:
    """A metric value: nan for a diverged (null) one."""
    if v is None:
        return "nan"
    if name == "samples_per_second":
        return f"{v:.1f}"
    if name == "lr":
        return f"{v:.6g}"
    return f"{v:.4f}"


def progress(job: dict) -> str:
    p = job.get("progress") or {}
    epochs = (job.get("spec") or {}).get("hyperparameters", {}).get("epochs")
    step, total = p.get("step", 0), p.get("total_steps")
    text = f"epoch {p.get('epoch', 0)}" + (f"/{epochs}" if epochs else "")
    if total:
        text += f", step {step}/{total} ({100 * step / total:.0f}%)"
    else:
        text += f", step {step}"
    return text


STATUS_STYLE = {"queued": "cyan", "running": "yellow", "succeeded": "green", "failed": "red",
                "cancelled": "magenta", "paused": "blue", "stopped": "dim",
                "ready": "green", "processing": "yellow"}


def status(name: str | None) -> str:
    style = STATUS_STYLE.get(name or "")
    return f"[{style}]{name}[/]" if style else str(name)
