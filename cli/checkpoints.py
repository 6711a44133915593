"""`trainhub checkpoints` and `download`: a job's checkpoints as a table; one of
them streamed to a file under a progress bar, its sha256 checked."""
import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any, Callable

import httpx
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cli import output
from cli.client import Api, CliError, KeyOption, UrlOption
from cli.ids import job_id as resolve_job
from cli.ids import job_path
from cli.jobs import JobArg

REF = re.compile(r"^(best|latest|[0-9]{1,6})$")  # core.checkpoint_format.REF_PATTERN
CHUNK = 1 << 20


def register(app: typer.Typer) -> None:
    app.command("checkpoints", rich_help_panel="Checkpoints and predictions")(checkpoints)
    app.command("download", rich_help_panel="Checkpoints and predictions")(download)


def checkpoints(job_id: JobArg, url: UrlOption = None, key: KeyOption = None) -> None:
    """A job's checkpoints, newest first, with their metrics, size and sha256."""
    with Api(url, key) as api:
        listing = api.get(job_path(api, job_id, "/checkpoints"))
    rows = sorted(listing["checkpoints"], key=lambda row: row["epoch"], reverse=True)
    if not rows:
        output.line(f"job {listing['job_id']} has no checkpoint yet (one is written at the end "
                    "of each epoch)")
        return
    best_metric = listing.get("best_metric") or "eval_accuracy"
    t = output.table("epoch", "tags", "step", best_metric, "metrics", "size", "sha256",
                     "created", whole=("created",))
    for row in rows:
        tags = [tag for tag in ("latest", "best") if listing.get(tag) == row["epoch"]]
        metrics = row.get("metrics") or {}
        others = " ".join(f"{k}={output.value(k, v)}" for k, v in sorted(metrics.items())
                          if k != best_metric)
        t.add_row(str(row["epoch"]), ",".join(tags), str(row["step"]),
                  output.value(best_metric, metrics.get(best_metric))
                  if best_metric in metrics else "-",
                  others, output.size(row["size_bytes"]), row["sha256"][:12],
                  output.when(row["created_at"]))
    output.show(t)


def download(
    job_id: JobArg,
    checkpoint: Annotated[str, typer.Option("--checkpoint", "-c",
                                            help="best, latest or an epoch number")] = "best",
    out: Annotated[Path | None, typer.Option(
        "--output", "-o", help="file to write (default <job>-epoch<N>.pt here)",
        show_default=False)] = None,
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """Download a checkpoint (torch.load(path, weights_only=True) reads it)."""
    if not REF.match(checkpoint):
        raise CliError(f"--checkpoint {checkpoint!r}: expected best, latest or an epoch number")
    with Api(url, key) as api:
        job_id = resolve_job(api, job_id)
        target, headers, digest, written = fetch(
            api, job_path(api, job_id, f"/checkpoints/{checkpoint}"), out,
            lambda h: Path(f"{job_id}-epoch{h.get('x-checkpoint-epoch', checkpoint)}.pt"),
            "x-checkpoint-sha256")
    epoch = headers.get("x-checkpoint-epoch", checkpoint)
    output.line(f"saved {target} (epoch {epoch}, {output.size(written)}, sha256 {digest})")


def fetch(api: Api, path: str, out: Path | None, name: Callable[[httpx.Headers], Path],
          sha256_header: str, **kwargs: Any) -> tuple[Path, httpx.Headers, str, int]:
    """GET `path` streamed into `out` (default: the file `name` makes of the response's
    headers) by save(), checked against the sha256 the header `sha256_header` gives.
    Returns (the file, the headers, its sha256, its bytes)."""
    with api.stream("GET", path, **kwargs) as resp:
        target = out or name(resp.headers)
        total = int(resp.headers.get("content-length") or 0) or None
        digest, written = save(resp.iter_bytes(CHUNK), target, total,
                               resp.headers.get(sha256_header))
    return target, resp.headers, digest, written


def save(chunks, target: Path, total: int | None,
         expected_sha256: str | None = None) -> tuple[str, int]:
    """Write the chunks to a temporary file beside target, renamed into place once complete
    and matching expected_sha256 (an interrupted or corrupt download leaves no file).
    Returns (sha256, bytes)."""
    target = target.expanduser()
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise CliError(f"cannot write {target}: no folder {folder}")
    digest, written = hashlib.sha256(), 0
    bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=output.console(),
                    disable=not output.interactive(), transient=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh, bars:
            task = bars.add_task(f"downloading {target.name}", total=total)
            for chunk in chunks:
                fh.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                bars.update(task, completed=written)
        if expected_sha256 and digest.hexdigest() != expected_sha256:
            raise CliError(f"{target}: sha256 {digest.hexdigest()} does not match the "
                           f"server's {expected_sha256}; nothing was written")
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's file is private
        os.replace(tmp, target)
    except OSError as exc:
        discard(tmp)
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        discard(tmp)
        raise
    return digest.hexdigest(), written


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def discard(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
