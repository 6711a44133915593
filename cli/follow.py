"""`trainhub follow`: a job's event stream as the tutorial's loss lines and one line per
epoch, under a progress bar; the exit code says how the job ended."""
import time
from typing import Any
from urllib.parse import quote

import typer
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task,
                           TaskID, TextColumn, TimeRemainingColumn)
from rich.text import Text

from cli import output
from cli.client import Api, CliError, KeyOption, UrlOption
from cli.jobs import JobArg
from cli.sse import job_events

# Per-epoch metrics, in the order an epoch's line shows them; others follow by name.
EPOCH_ORDER = ("eval_accuracy", "eval_loss", "val_accuracy", "val_loss", "train_loss",
               "train_accuracy", "samples_per_second", "lr")


def register(app: typer.Typer) -> None:
    app.command("follow", rich_help_panel="Jobs")(follow)


def loss_line(epoch: int, batch: int, value: float | None) -> str:
    """The PyTorch tutorial's running-loss line."""
    if value is None:  # a diverged run's point is null
        return "[%d, %5d] loss: nan" % (epoch, batch)
    return "[%d, %5d] loss: %.3f" % (epoch, batch, value)


def epoch_line(epoch: int, metrics: dict[str, float | None]) -> str:
    names = [n for n in EPOCH_ORDER if n in metrics]
    names += sorted(n for n in metrics if n not in EPOCH_ORDER)
    return f"epoch {epoch}: " + " ".join(f"{n}={output.value(n, metrics[n])}" for n in names)


class SampleRate(ProgressColumn):
    """Samples per second: the bar's steps per second times the batch size."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("- samples/s", style="dim")
        return Text(f"{speed * self.batch_size:,.0f} samples/s", style="cyan")


class Display:
    """Turns the job's events into lines (always) and progress bars (on a terminal)."""

    def __init__(self, job: dict[str, Any], live: bool):
        self.job = job
        hp = (job.get("spec") or {}).get("hyperparameters") or {}
        self.epochs = int(hp.get("epochs") or 0)
        self.batch_size = int(hp.get("batch_size") or 1)
        total = (job.get("progress") or {}).get("total_steps")
        self.steps_per_epoch = total // self.epochs if total and self.epochs else 0
        self.status: str | None = None
        self.pending: tuple[int, dict[str, float | None]] | None = None  # an epoch's metrics
        self.loss: float | None = None
        self.bars: Progress | None = None
        self.tasks: dict[int, TaskID] = {}
        if live and self.steps_per_epoch:
            self.bars = Progress(
                TextColumn("epoch {task.fields[epoch]}/" + str(self.epochs)),
                BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), SampleRate(self.batch_size),
                TimeRemainingColumn(), console=output.console(), transient=False)
            self.bars.start()

    # ---- output -------------------------------------------------------------------------

    def print(self, text: str, err: bool = False) -> None:
        if self.bars is not None and not err:
            self.bars.console.print(Text(text), soft_wrap=True)
        else:
            output.line(text, err=err)

    def flush(self) -> None:
        """Print the buffered epoch line, if any."""
        if self.pending is not None:
            epoch, metrics = self.pending
            self.pending = None
            self.print(epoch_line(epoch, metrics))

    def close(self) -> None:
        self.flush()
        if self.bars is not None:
            self.bars.stop()
            self.bars = None

    # ---- events -------------------------------------------------------------------------

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "metric":
            self.metric(event)
            return
        self.flush()
        if kind == "progress":
            self.position(int(event.get("step") or 0))
        elif kind in ("status", "end"):
            if isinstance(event.get("job"), dict):
                self.job = event["job"]
            status = event.get("status") or self.job.get("status")
            if kind == "status" and status != self.status:
                self.status = status
                self.print(self.status_line(status))
            if isinstance(event.get("job"), dict) and event["job"].get("progress"):
                self.position(int(event["job"]["progress"].get("step") or 0))

    def metric(self, event: dict[str, Any]) -> None:
        name, epoch = event.get("name"), int(event.get("epoch") or 0)
        if name == "loss":
            self.flush()
            self.loss = event.get("value")
            self.print(loss_line(epoch, int(event.get("batch") or 0), self.loss))
            self.position(int(event.get("step") or 0))
            return
        if self.pending is not None and self.pending[0] != epoch:
            self.flush()
        if self.pending is None:
            self.pending = (epoch, {})
        self.pending[1][name] = event.get("value")

    def status_line(self, status: str | None) -> str:
        job = self.job
        text = f"status: {status}"
        if status == "running" and job.get("worker"):
            text += f" on {job['worker']} ({job.get('device') or '?'})"
            if (job.get("attempts") or 0) > 1:
                text += f", attempt {job['attempts']}"
        return text

    def position(self, step: int) -> None:
        """Move the bars to a global step: the epoch it falls in and the step within it."""
        if self.bars is None or not self.steps_per_epoch:
            return
        spe = self.steps_per_epoch
        epoch = min(step // spe + 1, max(self.epochs, 1))
        within = step - (epoch - 1) * spe
        if within == 0 and epoch > 1:  # exactly at an epoch's end
            epoch, within = epoch - 1, spe
        loss = "-" if self.loss is None else f"{self.loss:.3f}"
        for earlier, task in self.tasks.items():
            if earlier < epoch:
                self.bars.update(task, completed=spe)
        if epoch not in self.tasks:
            self.tasks[epoch] = self.bars.add_task("", total=spe, epoch=epoch, loss=loss)
        self.bars.update(self.tasks[epoch], completed=min(within, spe), loss=loss)


def finish(job_id: str, end: dict[str, Any], display: Display, started: float) -> int:
    job = end.get("job") if isinstance(end.get("job"), dict) else display.job
    status = end.get("status") or job.get("status")
    elapsed = time.monotonic() - started
    if status == "succeeded":
        metrics = job.get("metrics") or {}
        shown = " ".join(f"{n}={output.value(n, metrics[n])}" for n in EPOCH_ORDER
                         if n in metrics and n.startswith(("eval_", "val_")))
        display.print(f"job {job_id} succeeded ({elapsed:.1f}s followed)"
                      + (f": {shown}" if shown else ""))
        return 0
    why = f": {job['error']}" if job.get("error") else ""
    if status == "cancelled":
        display.print(f"error: job {job_id} was cancelled{why}", err=True)
    else:
        display.print(f"error: job {job_id} {status}{why}", err=True)
    return 1


def follow_job(api: Api, job_id: str) -> int:
    """Follow the job to its end; the exit code: 0 succeeded, 1 failed or cancelled."""
    job = api.get(f"/jobs/{quote(job_id, safe='')}")  # a 404 says so before any stream
    job_id = job["id"]
    display = Display(job, live=output.interactive())
    display.print(f"following job {job_id} ({job['name']}): {job['model']} on "
                  f"{job['dataset']}")
    started = time.monotonic()
    try:
        for event in job_events(api, job_id, on_heartbeat=display.flush):
            display.handle(event)
            if event.get("type") == "end":
                display.close()
                return finish(job_id, event, display, started)
    except KeyboardInterrupt:
        display.close()
        stopped = CliError(f"stopped following; job {job_id} goes on "
                           f"(`trainhub cancel {job_id}` stops it)")
        stopped.exit_code = 130
        raise stopped from None
    finally:
        display.close()
    raise CliError(f"the event stream of job {job_id} ended without an end event")


def follow(job_id: JobArg, url: UrlOption = None, key: KeyOption = None) -> None:
    """Follow a job live until it ends; exit code 0 when it succeeded, 1 when it did not.

    Prints the loss lines and one evaluation line per epoch, under a progress bar on a
    terminal."""
    with Api(url, key) as api:
        code = follow_job(api, job_id)
    raise typer.Exit(code)
