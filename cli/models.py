"""`trainhub models upload|list|show|delete`: a tenant's own architecture as torch.export
programs (exported here from `file.py:Name`, or a .pt2 made by hand), the models a job can
name, one program, deleting one."""
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table

from cli import output, program_export
from cli.client import Api, CliError, KeyOption, UrlOption
from cli.datasets import UPLOAD_TIMEOUT
from cli.ids import FULL_ID, PREFIX, AmbiguousId

app = typer.Typer(help="Your own architectures (torch.export programs), and the models a job "
                       "can name.", no_args_is_help=True)

ModelArg = Annotated[str, typer.Argument(metavar="MODEL", show_default=False,
                                         help="a model's id (POST /models made it), or the "
                                              "start of it that names one")]


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="models", rich_help_panel="Models")


def model_id(api: Api, text: str) -> str:
    """The program id text stands for: a whole id, or the start of exactly one of the
    caller's (GET /models lists them); anything else goes on as it is, for the API's 404."""
    prefix = text.strip().lower()
    if FULL_ID.fullmatch(prefix) or not PREFIX.fullmatch(prefix):
        return text
    matches = [m for m in api.get("/models")["models"]
               if m["source"] == "program" and m["id"].startswith(prefix)]
    if len(matches) > 1:
        listed = ", ".join(f"{m['id']} ({m['name']})" for m in matches[:10])
        raise AmbiguousId(f"model id {text!r} starts {len(matches)} models: {listed}; give "
                          "more of its digits")
    return matches[0]["id"] if matches else text


def _shape(program: dict[str, Any]) -> str:
    return "x".join(map(str, program["input_shape"]))


def summary(program: dict[str, Any]) -> str:
    return (f"model {program['name']}: input {_shape(program)}, {program['num_classes']} "
            f"classes, {program['parameter_count']:,} parameters, {len(program['ops'])} ops")


def details(p: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("id", p["id"])
    grid.add_row("name", escape(p["name"]))
    grid.add_row("input", f"{_shape(p)} (channels x height x width), any batch size")
    grid.add_row("classes", str(p["num_classes"]))
    grid.add_row("parameters", f"{p['parameter_count']:,}")
    files = escape(p.get("source_filename") or "-")
    eval_file = p.get("eval_source_filename")
    files += f" (train), {escape(eval_file)} (eval)" if eval_file else " (train and eval)"
    grid.add_row("files", files)
    grid.add_row("stored", f"{output.size(p['size_bytes'])}, sha256 {p['sha256']}")
    grid.add_row("ops", escape(", ".join(p["ops"])))
    grid.add_row("created", output.when(p.get("created_at")))
    return grid


@app.command("upload")
def upload(
    source: Annotated[str, typer.Argument(
        metavar="SOURCE", show_default=False,
        help="file.py:Name (a torch.nn.Module, or a class or function making one without "
             "arguments: exported here in train and eval mode) or a .pt2 made with "
             "torch.export.save in train mode")],
    eval_file: Annotated[Path | None, typer.Option(
        "--eval-file", help="with a .pt2: the eval-mode export of the same module (needed "
                            "unless its graph has no mode-dependent op)")] = None,
    input_shape: Annotated[str | None, typer.Option(
        "--input-shape", metavar="C,H,W", help="with file.py:Name: one image's shape, "
                                               "e.g. 3,32,32")] = None,
    name: Annotated[str | None, typer.Option(help="default: file.Name, or the .pt2's name "
                                                  "up to its dot")] = None,
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """Upload your own architecture; prints a summary, then its id (a job's model) alone."""
    with ExitStack() as stack:
        if program_export.is_module_source(source):
            if eval_file is not None:
                raise CliError("--eval-file goes with a .pt2: file.py:Name is exported in "
                               "both modes here")
            shape = program_export.parse_input_shape(input_shape)
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="trainhub-export-")))
            train, eval_file = program_export.export_pair(source, shape, folder)
            path = Path(source.rpartition(":")[0])
            name = name or f"{path.stem}.{source.rpartition(':')[2]}"
        else:
            if input_shape is not None:
                raise CliError("--input-shape goes with file.py:Name: a .pt2 has its own")
            train = Path(source)
        files = {"file": _opened(stack, train)}
        if eval_file is not None:
            files["eval_file"] = _opened(stack, eval_file)
        with Api(url, key, timeout=UPLOAD_TIMEOUT) as api:
            program = api.post("/models", files=files,
                               data={"name": name} if name is not None else None)
    output.line(summary(program), err=True)
    output.line(program["id"])


def _opened(stack: ExitStack, path: Path) -> tuple[str, Any, str]:
    try:
        handle = stack.enter_context(open(path, "rb"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path.name, handle, "application/octet-stream"


@app.command("list")
def list_models(search: Annotated[str | None, typer.Option(
                    "--search", "-s", help="only the models whose name holds this text")] = None,
                url: UrlOption = None, key: KeyOption = None) -> None:
    """Your own models (newest first), then the built-ins and torchvision's zoo."""
    with Api(url, key) as api:
        models = api.get("/models", q=search)["models"]
    t = output.table("name", "id", "source", "family", "parameters", "input", whole=("id",))
    for m in models:
        t.add_row(escape(m["name"]), m["id"] if m.get("program") else "", m["source"],
                  m["family"], f"{m['parameters']:,}" if m.get("parameters") is not None
                  else "-", _input(m))
    output.show(t)


def _input(model: dict[str, Any]) -> str:
    """What a model takes: a program its exact shape and classes, a built-in any size, a
    torchvision model its fixed or least size."""
    if model.get("program"):
        return f"{_shape(model['program'])}, {model['program']['num_classes']} classes"
    if model["source"] == "builtin":
        return "any"
    if model.get("fixed_image_size"):
        return "x".join(map(str, model["fixed_image_size"]))
    return f">= {model.get('min_image_size') or 1}"


@app.command("show")
def show(model: ModelArg,
         as_json: Annotated[bool, typer.Option("--json", help="as the API returns it")] = False,
         url: UrlOption = None, key: KeyOption = None) -> None:
    """One of your models: its input, classes, parameters, files and ops."""
    with Api(url, key) as api:
        program = api.get(f"/models/{quote(model_id(api, model), safe='')}")
    output.show_resource(program, as_json, details)


@app.command("delete")
def delete(model: ModelArg, url: UrlOption = None, key: KeyOption = None) -> None:
    """Delete one of your models and its files (not while a queued, running or paused job names it)."""
    with Api(url, key) as api:
        target = model_id(api, model)
        api.request("DELETE", f"/models/{quote(target, safe='')}")
    output.line(f"model {target} deleted")
