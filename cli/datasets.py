"""`trainhub datasets upload|list|show`: an upload streamed as multipart under a progress
bar, the list, one dataset."""
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.markup import escape
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                           TimeRemainingColumn, TransferSpeedColumn)
from rich.table import Table

from cli import output
from cli.client import Api, CliError, KeyOption, UrlOption
from cli.ids import dataset_id

CHUNK = 1 << 20
# The API reads an upload's headers before it answers (a worker decodes it later): a large
# one takes a while.
UPLOAD_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
POLL_S = 1.0

app = typer.Typer(help="Upload and list datasets.", no_args_is_help=True)


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="datasets", rich_help_panel="Datasets")


# ---- multipart, streamed -------------------------------------------------------------------

def _quoted(text: str) -> str:
    """A form-data parameter value (HTML's rules, as browsers and httpx send them)."""
    return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class Multipart:
    """A multipart/form-data body of text fields and one file, produced by a generator that
    reads the file a chunk at a time and reports each chunk (the bar advances as the bytes
    go out). Its length is known up front, so it is sent with a Content-Length."""

    def __init__(self, fields: dict[str, str], file_field: str, path: Path,
                 on_chunk: Callable[[int], None] = lambda n: None, chunk: int = CHUNK):
        self.boundary = secrets.token_hex(16)
        self.path, self.on_chunk, self.chunk = path, on_chunk, chunk
        b = self.boundary
        head = b"".join(
            f'--{b}\r\nContent-Disposition: form-data; name="{_quoted(k)}"\r\n\r\n'.encode()
            + v.encode() + b"\r\n" for k, v in fields.items())
        head += (f'--{b}\r\nContent-Disposition: form-data; name="{_quoted(file_field)}"; '
                 f'filename="{_quoted(path.name)}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode()
        self.head, self.tail = head, f"\r\n--{b}--\r\n".encode()
        try:
            self.file_size = path.stat().st_size
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not path.is_file():
            raise CliError(f"cannot read {path}: not a file")

    def _open(self):
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise CliError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self.head) + self.file_size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        sent = 0
        with self._open() as fh:
            while sent < self.file_size:
                data = fh.read(min(self.chunk, self.file_size - sent))
                if not data:
                    break
                sent += len(data)
                yield data
                self.on_chunk(len(data))
        if sent != self.file_size:
            raise CliError(f"{self.path} changed size while it was being uploaded")
        yield self.tail


def upload_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=output.console(),
                    disable=not output.interactive(), transient=True)


# ---- commands -----------------------------------------------------------------------------

def counts(dataset: dict[str, Any], split: str) -> str:
    value = (dataset.get("counts") or {}).get(split)
    if isinstance(value, dict):
        value = sum(v for v in value.values() if isinstance(v, int))
    return "-" if value is None else str(value)


def shape(dataset: dict[str, Any]) -> str:
    return "x".join(map(str, dataset["shape"])) if dataset.get("shape") else "-"


def details(d: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("id", escape(d["id"]))
    grid.add_row("name", escape(d["name"]))
    grid.add_row("source", d["source"])
    grid.add_row("status", output.status(d["status"]))
    grid.add_row("shape", shape(d))
    if d.get("classes"):
        grid.add_row("classes", escape(f"{d.get('num_classes')}: {', '.join(d['classes'])}"))
    grid.add_row("images", f"train {counts(d, 'train')}, test {counts(d, 'test')}")
    if d.get("progress") and d["status"] == "processing":
        p = d["progress"]
        grid.add_row("progress", f"{p.get('done')}/{p.get('total') or '?'} images decoded")
    if d.get("location"):
        grid.add_row("location", escape(d["location"]))
    if d.get("error"):
        grid.add_row("error", f"[red]{escape(d['error'])}[/]")
    return grid


def wait_ready(api: Api, dataset: dict[str, Any]) -> dict[str, Any]:
    """Poll a processing upload until it is ready (or failed: CliError)."""
    path = f"/datasets/{quote(dataset['id'], safe='')}"
    bars = Progress(TextColumn("decoding {task.fields[name]}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total} images"),
                    console=output.console(), disable=not output.interactive(), transient=True)
    with bars:
        task = bars.add_task("", total=None, name=dataset["name"])
        while dataset["status"] == "processing":
            time.sleep(POLL_S)
            dataset = api.get(path)
            p = dataset.get("progress") or {}
            bars.update(task, completed=p.get("done") or 0, total=p.get("total"))
    if dataset["status"] != "ready":
        raise CliError(f"dataset {dataset['id']} {dataset['status']}: "
                       f"{dataset.get('error') or 'no reason given'}")
    return dataset


@app.command("upload")
def upload(
    file: Annotated[Path, typer.Argument(
        help=".tar.gz/.tar/.zip (train/<class>/*, test/<class>/* or <class>/*) or .npz",
        show_default=False)],
    name: Annotated[str | None, typer.Option(help="default: the file name up to its dot")]
    = None,
    test_fraction: Annotated[float | None, typer.Option(
        "--test-fraction", help="share held out as test for a single <class>/* tree "
                                "(API default 0.1)")] = None,
    resize: Annotated[str | None, typer.Option(help="HxW: resize every image")] = None,
    channels: Annotated[int | None, typer.Option(help="1 or 3: convert every image")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="wait until a worker has decoded it (ready), or return once "
                                 "the API has accepted it")]
    = True,
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """Upload a dataset; prints a summary, then its id alone on the last line."""
    fields = {k: str(v) for k, v in (("name", name), ("test_fraction", test_fraction),
                                      ("resize", resize), ("channels", channels))
              if v is not None}
    bars = upload_bar()
    task = bars.add_task(f"uploading {file.name}", total=None)
    body = Multipart(fields, "file", file, on_chunk=lambda n: bars.advance(task, n))
    bars.update(task, total=body.file_size)
    with Api(url, key, timeout=UPLOAD_TIMEOUT) as api:
        with bars:
            dataset = api.post("/datasets", content=iter(body), headers={
                "Content-Type": body.content_type, "Content-Length": str(len(body))})
        if dataset["status"] == "processing" and wait:
            output.line(f"dataset {dataset['name']} ({dataset['id']}) was accepted; waiting "
                        "for a worker to decode it", err=True)
            dataset = wait_ready(api, dataset)
    if dataset["status"] == "ready":
        output.line(f"dataset {dataset['name']} is ready: {shape(dataset)}, "
                    f"{dataset.get('num_classes')} classes, train {counts(dataset, 'train')}, "
                    f"test {counts(dataset, 'test')}", err=True)
    else:
        output.line(f"dataset {dataset['name']} is {dataset['status']} (a worker decodes it; "
                    f"`trainhub datasets show {dataset['id']}` tells when it is ready)",
                    err=True)
    output.line(dataset["id"])


@app.command("list")
def list_datasets(url: UrlOption = None, key: KeyOption = None) -> None:
    """The built-in datasets, then the uploads, newest first."""
    with Api(url, key) as api:
        datasets = api.get("/datasets")["datasets"]
    t = output.table("name", "id", "source", "status", "shape", "classes", "train", "test",
                     whole=("id",))
    for d in datasets:
        t.add_row(escape(d["name"]), "" if d["source"] == "builtin" else d["id"], d["source"],
                  output.status(d["status"]), shape(d), str(d.get("num_classes") or "-"),
                  counts(d, "train"), counts(d, "test"))
    output.show(t)


@app.command("show")
def show(dataset: Annotated[str, typer.Argument(metavar="DATASET",
                                                help="a built-in's name, or an upload's id "
                                                     "or the start of it that names one",
                                                show_default=False)],
         as_json: Annotated[bool, typer.Option("--json", help="as the API returns it")] = False,
         url: UrlOption = None, key: KeyOption = None) -> None:
    """One dataset: status, shape, classes, counts (and why it failed)."""
    with Api(url, key) as api:
        d = api.get(f"/datasets/{quote(dataset_id(api, dataset), safe='')}")
    output.show_resource(d, as_json, details)
