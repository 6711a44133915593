"""`trainhub follow`: a job's event stream as the tutorial's loss lines and one line per
epoch, under a progress bar; the exit code says how the job ended."""
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import typer
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task,
                           TaskID, TextColumn, TimeRemainingColumn)
from rich.text import Text

from cli import output
from cli.client import Api, CliError, KeyOption, UrlOption
from cli.ids import job_path
from cli.jobs import JobArg, dataset_label, dataset_names
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


class StepRate:
    """Steps per second, from the global steps the events carry and when they arrived.

    The worker publishes in batches (a flush every half second; on connecting, everything so
    far at once), so events a few microseconds apart can be hundreds of steps apart: a rate
    between two of them (what rich's own task speed takes) came out 35 times the job's. Here
    a batch is one sample, its last step at its last event's time, and a rate spans at
    least MIN_SPAN_S of them, within the last WINDOW_S."""

    BATCH_S = 0.1  # events closer than this arrived in one batch
    MIN_SPAN_S = 2.0
    WINDOW_S = 10.0

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, step: int) -> None:
        now = self.clock()
        if self.samples and step < self.samples[-1][1]:
            self.samples.clear()  # a new attempt resumed from an earlier checkpoint
        if self.samples and now - self.samples[-1][0] < self.BATCH_S:
            self.samples.pop()
        self.samples.append((now, step))
        while now - self.samples[0][0] > self.WINDOW_S:
            self.samples.popleft()

    def per_second(self) -> float | None:
        if not self.samples:
            return None
        (first, start), (last, end) = self.samples[0], self.samples[-1]
        return (end - start) / (last - first) if last - first >= self.MIN_SPAN_S else None


class SampleRate(ProgressColumn):
    """Samples per second, as the Display worked it out (its `rate` field)."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        if rate is None:
            return Text("- samples/s", style="dim")
        return Text(f"{rate:,.0f} samples/s", style="cyan")


class Display:
    """Turns the job's events into lines (always) and progress bars (on a terminal)."""

    def __init__(self, job: dict[str, Any], live: bool,
                 clock: Callable[[], float] = time.monotonic):
        self.job = job
        hp = (job.get("spec") or {}).get("hyperparameters") or {}
        self.epochs = int(hp.get("epochs") or 0)
        self.batch_size = int(hp.get("batch_size") or 1)
        total = (job.get("progress") or {}).get("total_steps")
        self.steps_per_epoch = total // self.epochs if total and self.epochs else 0
        self.status: str | None = None
        self.pending: tuple[int, dict[str, float | None]] | None = None  # an epoch's metrics
        self.loss: float | None = None
        self.steps = StepRate(clock)
        self.reported_rate: float | None = None  # the last epoch's samples_per_second
        self.bars: Progress | None = None
        self.tasks: dict[int, TaskID] = {}
        if live and self.steps_per_epoch:
            self.bars = Progress(
                TextColumn("epoch {task.fields[epoch]}/" + str(self.epochs)),
                BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), SampleRate(),
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
            self.steps.add(int(event.get("step") or 0))
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
            self.steps.add(int(event.get("step") or 0))
            self.position(int(event.get("step") or 0))
            return
        if name == "samples_per_second":
            self.reported_rate = event.get("value")
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

    def samples_per_second(self) -> float | None:
        """Measured over the last seconds (steps times the global batch size); until that
        can be measured (the first seconds, a job shorter than that, a replay), the rate the
        job reported for its last epoch."""
        steps = self.steps.per_second()
        return steps * self.batch_size if steps is not None else self.reported_rate

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
        rate = self.samples_per_second()
        if epoch not in self.tasks:
            self.tasks[epoch] = self.bars.add_task("", total=spe, epoch=epoch, loss=loss,
                                                   rate=rate)
        self.bars.update(self.tasks[epoch], completed=min(within, spe), loss=loss, rate=rate)


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
    job = api.get(job_path(api, job_id))  # a 404 says so before any stream
    job_id = job["id"]
    display = Display(job, live=output.interactive())
    dataset = dataset_label(job, dataset_names(api, [job]))
    display.print(f"following job {job_id} ({job['name']}): {job['model']} on {dataset}")
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
