"""Checkpoints of a job: list them, download one by epoch, `latest` or `best`."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse

from api.deps import JobDep, SessionDep
from core import checkpoints as ckpt
from core.artifacts import get_store
from core.tables import Checkpoint

router = APIRouter(prefix="/jobs", tags=["checkpoints"])


def checkpoint_public(row: Checkpoint) -> dict:
    return {"epoch": row.epoch, "step": row.step, "metrics": row.metrics or {},
            "size_bytes": row.size_bytes, "sha256": row.sha256,
            "created_at": row.created_at.isoformat()}


@router.get("/{job_id}/checkpoints")
def list_checkpoints(job: JobDep, session: SessionDep) -> dict:
    rows = ckpt.job_checkpoints(session, job.id)
    latest, best = ckpt.pick(rows, job.spec, "latest"), ckpt.pick(rows, job.spec, "best")
    return {"job_id": job.id, "best_metric": ckpt.best_metric_name(job.spec),
            "latest": latest.epoch if latest else None, "best": best.epoch if best else None,
            "checkpoints": [checkpoint_public(r) for r in reversed(rows)]}


def resolve_or_error(session, job, ref: str, none_yet_status: int = 404) -> Checkpoint:
    """The checkpoint a reference names; 404 for a bad reference or a missing epoch, and
    none_yet_status when the job has no checkpoint at all."""
    if not ckpt.REF_PATTERN.fullmatch(ref):
        raise HTTPException(404, f"checkpoint {ref!r} not found: use latest, best or an epoch")
    rows = ckpt.job_checkpoints(session, job.id)
    if not rows:
        raise HTTPException(none_yet_status, f"job {job.id} is {job.status} and has no "
                                             "checkpoint yet; one is written at the end of "
                                             "every epoch")
    row = ckpt.pick(rows, job.spec, ref)
    if row is None:
        raise HTTPException(404, f"job {job.id} has no checkpoint {ref!r}")
    return row


@router.get("/{job_id}/checkpoints/{ref}", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def download_checkpoint(job: JobDep, ref: str, session: SessionDep) -> StreamingResponse:
    """The file; load it with torch.load(path, weights_only=True)."""
    row = resolve_or_error(session, job, ref)
    store = get_store()
    if not store.exists(row.storage_key):
        raise HTTPException(404, f"checkpoint epoch {row.epoch} of job {job.id} is gone from "
                                 "the artifact store")
    filename = f"{job.id}-epoch{row.epoch}.pt"
    return StreamingResponse(store.iter_bytes(row.storage_key),
                             media_type="application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Content-Length": str(row.size_bytes),
                                      "X-Checkpoint-Epoch": str(row.epoch),
                                      "X-Checkpoint-Sha256": row.sha256})
