"""Checkpoints of a job: list them, download one by epoch, `latest` or `best`."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import JobDep, SessionDep
from api.errors import responses
from api.schemas import CheckpointList, CheckpointPublic
from core import checkpoint_format as ckpt
from core.artifacts import get_store
from core.errors import NotFound

router = APIRouter(prefix="/jobs", tags=["checkpoints"])


@router.get("/{job_id}/checkpoints", response_model=CheckpointList, responses=responses(404))
def list_checkpoints(job: JobDep, session: SessionDep) -> CheckpointList:
    rows = ckpt.job_checkpoints(session, job.id)
    latest, best = ckpt.pick(rows, job.spec, "latest"), ckpt.pick(rows, job.spec, "best")
    return CheckpointList(job_id=job.id, best_metric=ckpt.best_metric_name(job.spec),
                          latest=latest.epoch if latest else None,
                          best=best.epoch if best else None,
                          checkpoints=[CheckpointPublic.from_row(r) for r in reversed(rows)])


@router.get("/{job_id}/checkpoints/{ref}", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "the checkpoint file"}, **responses(404)})
def download_checkpoint(job: JobDep, ref: str, session: SessionDep) -> StreamingResponse:
    """The file; load it with torch.load(path, weights_only=True)."""
    row = ckpt.find(session, job, ref)
    store = get_store()
    if not store.exists(row.storage_key):
        raise NotFound(f"checkpoint epoch {row.epoch} of job {job.id} is gone from the "
                       "artifact store")
    filename = f"{job.id}-epoch{row.epoch}.pt"
    return StreamingResponse(store.iter_bytes(row.storage_key),
                             media_type="application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Content-Length": str(row.size_bytes),
                                      "X-Checkpoint-Epoch": str(row.epoch),
                                      "X-Checkpoint-Sha256": row.sha256})
