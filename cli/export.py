"""`trainhub export`: a job's trained network as a file to deploy (a torch.export .pt2 or an
ONNX model, GET /jobs/{id}/export), streamed under `download`'s progress bar and checked
against the sha256 the server sends."""
import re
from enum import Enum
from pathlib import Path
from typing import Annotated

import httpx
import typer

from cli import output
from cli.checkpoints import REF, fetch
from cli.client import Api, CliError, KeyOption, UrlOption
from cli.ids import job_id as resolve_job
from cli.ids import job_path
from cli.jobs import JobArg

# The first export of a checkpoint is made while the request waits: a large torchvision
# network takes a minute or more on a busy CPU before the first byte.
EXPORT_TIMEOUT = httpx.Timeout(900.0, connect=10.0)
FILENAME = re.compile(r'filename="([^"/\\]+)"')


class Format(str, Enum):
    pt2 = "pt2"
    onnx = "onnx"


def register(app: typer.Typer) -> None:
    app.command("export", rich_help_panel="Checkpoints and predictions")(export)


def export(
    job_id: JobArg,
    out: Annotated[Path | None, typer.Option(
        "--output", "-o", help="file to write (default <job name>-epoch<N>.<format> here)",
        show_default=False)] = None,
    fmt: Annotated[Format, typer.Option(
        "--format", "-f", help="pt2: torch.export archive; onnx: ONNX model")] = Format.pt2,
    checkpoint: Annotated[str, typer.Option("--checkpoint", "-c",
                                            help="best, latest or an epoch number")] = "best",
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """Export a job's trained network for deployment: uint8 images (N, C, H, W) at the
    dataset's size in, class probabilities (N, K) out; torch.export.load(path).module() or
    onnxruntime runs it without trainhub (docs/api.md#export-a-trained-model)."""
    if not REF.match(checkpoint):
        raise CliError(f"--checkpoint {checkpoint!r}: expected best, latest or an epoch number")
    with Api(url, key, timeout=EXPORT_TIMEOUT) as api:
        job_id = resolve_job(api, job_id)

        def name(headers: httpx.Headers) -> Path:
            given = FILENAME.search(headers.get("content-disposition", ""))
            epoch = headers.get("x-checkpoint-epoch", checkpoint)
            return Path(given[1] if given else f"{job_id}-epoch{epoch}.{fmt.value}")

        target, headers, digest, written = fetch(
            api, job_path(api, job_id, "/export"), out, name, "x-export-sha256",
            params={"checkpoint": checkpoint, "format": fmt.value})
    output.line(f"saved {target} ({fmt.value}, epoch {headers.get('x-checkpoint-epoch')}, "
                f"{output.size(written)}, sha256 {digest})")
