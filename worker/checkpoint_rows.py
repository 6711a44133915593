"""A job's epoch checkpoint rows: one per epoch (a re-run of the epoch replaces it), and the
retention that keeps the newest few and the best.

The reporter stores the rows with its writes (worker.sink); retention deletes the other rows,
then their files."""
from __future__ import annotations

from sqlalchemy import select

from core import checkpoint_format as ckpt
from core.artifacts import get_store
from core.db import session_scope
from core.export_cache import drop_exports
from core.metrics import finite_values
from core.tables import Checkpoint


def store_checkpoint_row(session, job_id: str, row: dict) -> None:
    """In the session's transaction; the row's metrics stored finite (JSON has no NaN)."""
    old = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id,
                                                  Checkpoint.epoch == row["epoch"]))
    if old is not None:  # a re-run of the same epoch replaces its row
        session.delete(old)
        session.flush()
    session.add(Checkpoint(job_id=job_id, **{**row, "metrics": finite_values(row["metrics"])}))


def apply_retention(job_id: str, spec: dict, keep: int) -> None:
    """Keep the `keep` newest, plus best; delete the rest (rows and files)."""
    store = get_store()
    doomed: list[tuple[str, str]] = []
    with session_scope() as session:
        rows = ckpt.job_checkpoints(session, job_id)
        best = ckpt.select_best(rows, ckpt.best_metric_name(spec))
        for row in rows[keep:]:
            if best is not None and row.id == best.id:
                continue
            doomed.append((row.storage_key, row.sha256))
            session.delete(row)
    # Files only once the rows are gone: a commit lost to an outage must not leave rows
    # that point at deleted files.
    for key, sha256 in doomed:
        store.delete(key)
        drop_exports(store, job_id, sha256)
