"""GET /jobs/{id}/export: a checkpoint's network as a deployable file (a torch.export .pt2
or an ONNX model, core.export), made on the first request and kept in the artifact store
(core.export_cache), then streamed."""
from __future__ import annotations

import re
from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

from api.deps import JobDep, SessionDep
from api.errors import responses
from api.predictor import Predictor
from core import checkpoint_format as ckpt
from core.artifacts import get_store
from core.errors import Conflict
from core.export import ExportedClassifier, ExportError
from core.export_cache import stored_export

router = APIRouter(prefix="/jobs", tags=["checkpoints"])


class ExportFormat(str, Enum):
    pt2 = "pt2"
    onnx = "onnx"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def filename(job_name: str | None, job_id: str, epoch: int, fmt: str) -> str:
    """`<job name or id>-epoch<k>.<format>`: the name in characters every header and file
    system takes (others become '-'), the id where nothing of it is left."""
    stem = _UNSAFE.sub("-", job_name or "").strip("-.")[:100] or job_id
    return f"{stem}-epoch{epoch}.{fmt}"


@router.get("/{job_id}/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "the exported model"},
                       **responses(404, 409, 422)})
def export_model(
    job: JobDep, session: SessionDep,
    checkpoint: Annotated[str, Query(description="best, latest or an epoch",
                                     json_schema_extra={"pattern": ckpt.REF_REGEX})] = "best",
    fmt: Annotated[ExportFormat, Query(
        alias="format", description="pt2: a torch.export archive, loaded with "
                                    "torch.export.load(path).module(); onnx: an ONNX model")
    ] = ExportFormat.pt2,
) -> StreamingResponse:
    """The checkpoint's network with /predict's preprocessing folded in: input uint8
    images (N, C, H, W) at the dataset's size (the checkpoint's architecture.input_shape),
    output probabilities (N, K) in the order of the checkpoint's classes. Made once per
    checkpoint and format (the first request takes seconds), then served from the store."""
    if not ckpt.REF_PATTERN.fullmatch(checkpoint):
        raise RequestValidationError([{
            "loc": ("query", "checkpoint"), "type": "value_error",
            "msg": "expected best, latest or an epoch number"}])
    row = ckpt.find(session, job, checkpoint)
    job_id, name, model, epoch = job.id, job.name, job.model, row.epoch
    storage_key, checkpoint_sha256 = row.storage_key, row.sha256
    # Exporting takes seconds and no database: the pooled connection goes back first
    # (the dependency's own close at the end is then a no-op).
    session.close()
    store = get_store()

    def load() -> ExportedClassifier:
        # A copy of its own, loaded as /predict loads it but outside its cache: tracing
        # swaps a module's parameters for stand-ins while it runs, which a /predict on the
        # cached model beside it must never see.
        try:
            loaded = Predictor(store, capacity=0).get(job_id, storage_key, checkpoint_sha256)
        except (ckpt.CheckpointError, OSError) as exc:
            raise Conflict(f"checkpoint epoch {epoch} cannot be loaded: {exc}") from None
        return ExportedClassifier(loaded.model, loaded.mean, loaded.std, loaded.classes,
                                  loaded.shape)

    try:
        made = stored_export(store, job_id, checkpoint_sha256, fmt.value, load)
    except ExportError as exc:
        raise Conflict(f"job {job_id}'s model ({model}) cannot be exported: {exc}") from None
    return StreamingResponse(
        store.iter_bytes(made.key), media_type="application/octet-stream",
        headers={"Content-Disposition":
                 f'attachment; filename="{filename(name, job_id, epoch, fmt.value)}"',
                 "Content-Length": str(made.size), "X-Checkpoint-Epoch": str(epoch),
                 "X-Checkpoint-Sha256": checkpoint_sha256, "X-Export-Sha256": made.sha256})
