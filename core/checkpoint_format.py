"""The checkpoint format: one self-describing dict, loadable with torch.load(weights_only=True).

Everything in it is a tensor or a plain Python type, so loading never runs code. Beside the
training state it carries what prediction needs without the job row: the architecture and
its arguments, the input shape, the normalisation and the class names. A torchvision
model's image size (what each batch is resized to) is in its model_state, as the model's
extra state (`_extra_state`, an int64 tensor [height, width]: models.zoo): loading the
weights restores it, so /predict resizes as training did.
"""
from __future__ import annotations

import io
import re
from typing import Any, BinaryIO

from core.errors import NotFound

FORMAT = "trainhub.checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "architecture", "model_state", "normalization",
            "classes", "epoch", "step")
REF_REGEX = r"^(latest|best|[0-9]{1,6})$"  # for pydantic (its regex's $ is the true end)
REF_PATTERN = re.compile(r"^(latest|best|[0-9]{1,6})\Z")


class CheckpointError(Exception):
    """A file that is not a loadable trainhub checkpoint; the message says why."""


def load(source: str | BinaryIO | bytes) -> dict[str, Any]:
    """Load and check a checkpoint; never unpickles arbitrary objects."""
    import pickle

    import torch

    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        blob = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refused to load: the file holds objects other than tensors "
                              f"and plain types ({str(exc).splitlines()[0][:200]})") from None
    except Exception as exc:
        raise CheckpointError(f"not a readable checkpoint file ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError("not a trainhub checkpoint (no 'format': 'trainhub.checkpoint')")
    missing = [k for k in REQUIRED if k not in blob]
    if missing:
        raise CheckpointError(f"checkpoint lacks {', '.join(missing)}")
    if blob["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {blob['format_version']} is newer than this "
                              f"trainhub reads ({FORMAT_VERSION})")
    return blob


def best_metric_name(spec: dict) -> str:
    """`best` is chosen on validation when the job holds some out, else on test."""
    return ("val_accuracy" if spec["hyperparameters"].get("validation_fraction", 0) > 0
            else "eval_accuracy")


def architecture(model: str, input_shape, num_classes: int,
                 program_sha256: str | None = None) -> dict:
    """What a checkpoint records of its network: enough to build it again. A program
    model (`model` is its id) also records its files' sha256: weights fit that program only."""
    recorded = {"name": model, "input_shape": list(input_shape), "num_classes": num_classes}
    if program_sha256 is not None:
        recorded["program_sha256"] = program_sha256
    return recorded


def architecture_mismatch(source: dict, target: dict) -> str | None:
    """Why weights of architecture `source` cannot initialise `target`, or None if they can."""
    for key, label in (("name", "model"), ("input_shape", "input shape (C, H, W)"),
                       ("num_classes", "number of classes")):
        if list(_as_list(source.get(key))) != list(_as_list(target.get(key))):
            return (f"{label} differs: the checkpoint has {source.get(key)!r}, "
                    f"this job needs {target.get(key)!r}")
    return None


def _as_list(value):
    return value if isinstance(value, (list, tuple)) else [value]


def select_best(rows, metric: str):
    """The checkpoint row with the highest `metric` (ties: the earlier epoch), or None."""
    scored = [r for r in rows if isinstance((r.metrics or {}).get(metric), (int, float))]
    if not scored:
        return None
    return max(scored, key=lambda r: (r.metrics[metric], -r.epoch))


def job_checkpoints(session, job_id: str) -> list:
    """A job's checkpoint rows, newest epoch first."""
    from sqlalchemy import select

    from core.tables import Checkpoint

    return list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)
                                .order_by(Checkpoint.epoch.desc())))


def pick(rows: list, spec: dict, ref: str):
    """The row a reference names (`latest`, `best` or an epoch) among rows, newest first."""
    if not rows:
        return None
    if ref == "latest":
        return rows[0]
    if ref == "best":
        return select_best(rows, best_metric_name(spec)) or rows[0]
    return next((r for r in rows if r.epoch == int(ref)), None)


def resolve(session, job_id: str, spec: dict, ref: str):
    """The checkpoint row a reference names (`latest`, `best` or an epoch), or None."""
    return pick(job_checkpoints(session, job_id), spec, ref)


def find(session, job, ref: str, none_yet: type[Exception] = NotFound):
    """The row a reference names, or a domain error: NotFound for a bad reference or a
    missing epoch, `none_yet` when the job has no checkpoint at all."""
    if not REF_PATTERN.fullmatch(ref):
        raise NotFound(f"checkpoint {ref[:40]!r} not found: use latest, best or an epoch")
    rows = job_checkpoints(session, job.id)
    if not rows:
        raise none_yet(f"job {job.id} is {job.status} and has no checkpoint yet; one is "
                       "written at the end of every epoch")
    row = pick(rows, job.spec, ref)
    if row is None:
        raise NotFound(f"job {job.id} has no checkpoint {ref!r}")
    return row
