"""Fine-tuning's `init_from`: the checkpoint it names must exist and match the new network.

The API checks it at submission and the worker loads it at start, with this one function."""
from __future__ import annotations

from core import checkpoint_format as ckpt
from core.artifacts import ArtifactStore
from core.errors import FieldError
from core.tables import Checkpoint, Job
from core.tenancy import Tenant, get_owned


def load_init_from(session, store: ArtifactStore, init_from: dict,
                   target_architecture: dict, tenant: Tenant) -> tuple[Checkpoint, dict]:
    """(checkpoint row, loaded checkpoint) for init_from; FieldError naming the field if not.
    Only the tenant's own jobs can be named (another's is answered as a missing one)."""
    job_id, ref = init_from["job_id"], init_from["checkpoint"]
    source_job = get_owned(session, Job, job_id, tenant,
                           missing=FieldError("init_from.job_id", f"no job {job_id}"))
    row = ckpt.resolve(session, job_id, source_job.spec, ref)
    if row is None:
        raise FieldError("init_from.checkpoint", f"job {job_id} has no checkpoint {ref!r} "
                         f"(yet); see GET /jobs/{job_id}/checkpoints")
    try:
        with store.open(row.storage_key) as f:
            blob = ckpt.load(f)
    except (ckpt.CheckpointError, OSError) as exc:
        raise FieldError("init_from.checkpoint", f"cannot be read: {exc}") from None
    mismatch = ckpt.architecture_mismatch(blob["architecture"], target_architecture)
    if mismatch:
        raise FieldError("init_from", f"architectures don't match: {mismatch}")
    return row, blob
