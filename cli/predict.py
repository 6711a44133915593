"""`trainhub predict`: classify image files with a trained job's checkpoint; one table of
the top classes per image."""
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli import output
from cli.checkpoints import REF
from cli.client import Api, CliError, KeyOption, UrlOption
from cli.ids import job_id


def register(app: typer.Typer) -> None:
    app.command("predict", rich_help_panel="Checkpoints and predictions")(predict)


def predict(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", show_default=False,
                                                 help="image files, any format Pillow reads")],
    job: Annotated[str, typer.Option("--job", "-j", help="the trained job's id (or the start "
                                                         "of it that names one job)",
                                     show_default=False)],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="classes per image")] = 5,
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", "-c", help="best, latest or an epoch number")] = "best",
    as_json: Annotated[bool, typer.Option("--json", help="the API's answer as JSON")] = False,
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """Classify images with a job's checkpoint."""
    if not REF.match(checkpoint):
        raise CliError(f"--checkpoint {checkpoint!r}: expected best, latest or an epoch number")
    with ExitStack() as files, Api(url, key) as api:
        parts = []
        for path in images:
            try:
                parts.append(("image", (path.name, files.enter_context(open(path, "rb")))))
            except OSError as exc:
                raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
        answer = api.post("/predict", files=parts, data={
            "job_id": job_id(api, job), "top_k": str(top_k), "checkpoint": checkpoint})
    if as_json:
        output.line(json.dumps(answer, indent=2))
        return
    used = answer.get("checkpoint") or {}
    output.line(f"job {answer.get('job_id')}, checkpoint {used.get('ref')} "
                f"(epoch {used.get('epoch')})")
    for path, predictions in zip(images, answer["predictions"], strict=False):
        output.line(f"{path}:")
        t = output.table("#", "label", "index", "probability")
        for rank, p in enumerate(predictions, 1):
            t.add_row(str(rank), escape(p["label"]), str(p["index"]), f"{p['probability']:.4f}")
        output.show(t)
