"""`trainhub submit`: a job from flags, `--set` and a JSON or YAML file (flags win),
POSTed to /jobs.

Prints a summary on stderr and the job id alone on the last line of stdout; `--follow`
then follows the job."""
import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from cli import output
from cli.client import Api, CliError, KeyOption, UrlOption
from cli.ids import dataset_id, job_id
from cli.jobs import dataset_label, dataset_names

# Keys of `--set` that are fields of the job itself; any other plain key is a
# hyperparameter, and a dotted key (init_from.job_id) is a path from the top.
TOP_LEVEL = ("name", "model", "dataset", "device", "max_runtime_seconds")


def register(app: typer.Typer) -> None:
    app.command("submit", rich_help_panel="Jobs")(submit)


def load_file(path: Path, fields: str = "job fields (model, dataset, hyperparameters, ...)"
              ) -> dict[str, Any]:
    """A spec file: JSON or YAML (YAML reads JSON too), one mapping (of `fields`, for the
    message when it is not one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not a text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid JSON or YAML"
        raise CliError(f"{path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a mapping of {fields}, got a "
                       f"{type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """`--set` values: JSON scalars (5, 0.9, 1e-3, true, null) as such, anything else a
    string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def set_path(spec: dict[str, Any], key: str, value: Any) -> None:
    if "." in key:
        path = key.split(".")
    elif key in TOP_LEVEL:
        path = [key]
    else:
        path = ["hyperparameters", key]
    node = spec
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def build_spec(base: dict[str, Any], fields: dict[str, Any], hyper: dict[str, Any],
               settings: list[str]) -> dict[str, Any]:
    """The file's spec, then each `--set`, then the named flags (None: not given)."""
    spec = json.loads(json.dumps(base))  # a deep copy
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set {item!r}: expected key=value (e.g. --set momentum=0.5)")
        set_path(spec, key.strip(), parse_value(raw))
    for key, value in fields.items():
        if value is not None:
            spec[key] = value
    for key, value in hyper.items():
        if value is not None:
            set_path(spec, key, value)
    return spec


def resolve_ids(api: Api, spec: dict[str, Any]) -> None:
    """The start of an upload's id as `dataset`, or of a job's as `init_from.job_id`, made
    the whole id it names (the API takes whole ids only)."""
    if isinstance(spec.get("dataset"), str):
        spec["dataset"] = dataset_id(api, spec["dataset"])
    init_from = spec.get("init_from")
    if isinstance(init_from, dict) and isinstance(init_from.get("job_id"), str):
        init_from["job_id"] = job_id(api, init_from["job_id"])


def summary(job: dict[str, Any], names: dict[str, str]) -> str:
    spec = job.get("spec") or {}
    hp = spec.get("hyperparameters") or {}
    parts = [f"{job.get('model')} on {dataset_label(job, names)}"]
    if hp:
        parts.append(f"{hp.get('epochs')} epochs, batch {hp.get('batch_size')}, "
                     f"{hp.get('optimizer')} lr {hp.get('lr')}")
    parts.append(f"device {spec.get('device', 'auto')}")
    total = (job.get("progress") or {}).get("total_steps")
    if total:
        parts.append(f"{total} steps")
    return f"submitted {job.get('name')}: {', '.join(parts)} ({job.get('status')})"


def submit(
    file: Annotated[Path | None, typer.Argument(
        help="a job spec, JSON or YAML (the body POST /jobs takes); flags override it",
        show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        help="lenet, cnn, mlp, resnet18, torchvision.<name>, or your own model's id "
             "(trainhub models upload; GET /models lists them)")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="digits, fake, mnist, fashion_mnist, cifar10, or an uploaded dataset's id (or "
             "the start of it that names one)")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd, adam, adamw")] = None,
    log_every: Annotated[int | None, typer.Option(
        "--log-every", help="mini-batches between loss points")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    name: Annotated[str | None, typer.Option(help="default <model>-<dataset>")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE",
        help="any hyperparameter (momentum=0.5), or a dotted path from the top of the spec "
             "(init_from.job_id=ID); repeatable")] = None,
    follow_it: Annotated[bool, typer.Option(
        "--follow", "-f", help="then follow the job until it ends (exit code as `follow`)")
    ] = False,
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """Submit a training job; prints a summary, then the job id alone on the last line."""
    base = load_file(file) if file is not None else {}
    spec = build_spec(
        base,
        {"model": model, "dataset": dataset, "name": name, "device": device},
        {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
         "log_every": log_every, "seed": seed},
        settings or [])
    with Api(url, key) as api:
        resolve_ids(api, spec)
        job = api.post("/jobs", json=spec)
        output.line(summary(job, dataset_names(api, [job])), err=True)
        output.line(job["id"])
        if follow_it:
            from cli.follow import follow_job

            raise typer.Exit(follow_job(api, job["id"]))
