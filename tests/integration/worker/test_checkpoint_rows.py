"""Checkpoint retention (worker.checkpoint_rows.apply_retention) on the real Postgres: the
checkpoints it drops take their exports with them (core.export_cache), the kept ones keep
theirs."""
from __future__ import annotations

import hashlib

import pytest

from core import jobs
from core.artifacts import checkpoint_key, get_store
from core.db import session_scope, upgrade_schema
from core.export_cache import export_key, note_key
from core.jobspec import JobSpec
from core.tables import Checkpoint
from worker.checkpoint_rows import apply_retention


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def test_retention_deletes_the_exports_of_the_checkpoints_it_drops(data_dir):
    store = get_store()
    spec = JobSpec(model="mlp", dataset="digits").resolved()
    with session_scope() as session:
        job_id = jobs.create_job(session, spec).id
    hashes = {}
    for epoch, accuracy in ((1, 0.9), (2, 0.5), (3, 0.6)):  # epoch 1 is the best
        key = checkpoint_key(job_id, epoch)
        store.save(key, lambda f, e=epoch: f.write(b"checkpoint %d" % e))
        hashes[epoch] = hashlib.sha256(b"checkpoint %d" % epoch).hexdigest()
        for fmt in ("pt2", "onnx"):
            export = export_key(job_id, hashes[epoch], fmt)
            store.save(export, lambda f: f.write(b"program"))
            store.save(note_key(export), lambda f: f.write(b"{}"))
        with session_scope() as session:
            session.add(Checkpoint(job_id=job_id, epoch=epoch, step=epoch * 10,
                                   storage_key=key, size_bytes=12, sha256=hashes[epoch],
                                   metrics={"eval_accuracy": accuracy}))

    apply_retention(job_id, spec, keep=1)

    def exports(epoch: int) -> list[bool]:
        return [store.exists(k) for fmt in ("pt2", "onnx")
                for k in (export_key(job_id, hashes[epoch], fmt),
                          note_key(export_key(job_id, hashes[epoch], fmt)))]

    assert exports(3) == [True] * 4  # the newest
    assert exports(1) == [True] * 4  # the best
    assert exports(2) == [False] * 4
    assert not store.exists(checkpoint_key(job_id, 2))
