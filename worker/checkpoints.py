"""Writes a checkpoint at the end of every epoch and keeps latest, best and a few more."""
from __future__ import annotations

import logging

import torch
from sqlalchemy import select

from core import checkpoints as fmt
from core.artifacts import ArtifactStore, checkpoint_key
from core.db import session_scope
from core.imagedata import ImageDataset
from core.metrics import finite_values
from core.tables import Checkpoint
from worker.loop import EpochEnd

log = logging.getLogger(__name__)


def rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def build(end: EpochEnd, spec: dict, dataset: ImageDataset) -> dict:
    """The checkpoint dict: tensors and plain types only (see core.checkpoints)."""
    return {
        "format": fmt.FORMAT,
        "format_version": fmt.FORMAT_VERSION,
        "architecture": fmt.architecture(spec["model"], dataset.shape, len(dataset.classes)),
        "model_state": {k: v.detach().cpu() for k, v in end.model.state_dict().items()},
        "optimizer_state": end.optimizer.state_dict(),
        "scheduler_state": end.scheduler.state_dict() if end.scheduler is not None else None,
        "rng_state": rng_state(end.generator),
        "epoch": end.epoch,
        "step": end.step,
        "metrics": dict(end.metrics),
        "spec": spec,
        "dataset": dataset.name,
        "normalization": {"mean": list(dataset.mean), "std": list(dataset.std)},
        "classes": list(dataset.classes),
    }


class CheckpointWriter:
    """on_epoch_end hook: save atomically, record size and sha256, apply retention."""

    def __init__(self, job_id: str, spec: dict, dataset: ImageDataset, store: ArtifactStore,
                 keep: int):
        self.job_id, self.spec, self.dataset = job_id, spec, dataset
        self.store, self.keep = store, keep
        self.best_metric = fmt.best_metric_name(spec)

    def __call__(self, end: EpochEnd) -> None:
        blob = build(end, self.spec, self.dataset)
        key = checkpoint_key(self.job_id, end.epoch)
        size, sha = self.store.save(key, lambda f: torch.save(blob, f))
        with session_scope() as session:
            old = session.scalar(select(Checkpoint).where(Checkpoint.job_id == self.job_id,
                                                          Checkpoint.epoch == end.epoch))
            if old is not None:  # a re-run of the same epoch replaces its row
                session.delete(old)
                session.flush()
            session.add(Checkpoint(job_id=self.job_id, epoch=end.epoch, step=end.step,
                                   storage_key=key, size_bytes=size, sha256=sha,
                                   metrics=finite_values(blob["metrics"])))
        log.info("job %s: checkpoint epoch %d (%d bytes, sha256 %s…)", self.job_id, end.epoch,
                 size, sha[:12])
        self.apply_retention()

    def apply_retention(self) -> None:
        """Keep the `keep` newest, plus best; delete the rest (rows and files)."""
        with session_scope() as session:
            rows = list(session.scalars(select(Checkpoint).where(
                Checkpoint.job_id == self.job_id).order_by(Checkpoint.epoch.desc())))
            best = fmt.select_best(rows, self.best_metric)
            for row in rows[self.keep:]:
                if best is not None and row.id == best.id:
                    continue
                self.store.delete(row.storage_key)
                session.delete(row)
