"""Checkpoints: one at the end of every epoch (kept: latest, best and a few more), and a
mid-epoch resume checkpoint that a later attempt continues from."""
from __future__ import annotations

import logging
from typing import Callable

import torch

from core import checkpoint_format as fmt
from core.artifacts import ArtifactStore, checkpoint_key, resume_key
from core.program_models import program_sha256
from core.tensor_datasets import ImageDataset
from worker.state import EpochEnd, TrainState

log = logging.getLogger(__name__)

# TrainState.state_dict() keys stored at the checkpoint's top level, under these names.
_TOP_LEVEL = {"optimizer": "optimizer_state", "scheduler": "scheduler_state", "rng": "rng_state"}


def build_blob(model: torch.nn.Module, training_state: dict, epoch: int, step: int,
               metrics: dict, spec: dict, dataset: ImageDataset) -> dict:
    """The checkpoint dict: tensors and plain types only (see core.checkpoint_format). `epoch` is
    the last completed epoch; training_state says where inside the next one it stands."""
    blob = {
        "format": fmt.FORMAT,
        "format_version": fmt.FORMAT_VERSION,
        "architecture": fmt.architecture(spec["model"], dataset.shape, len(dataset.classes),
                                         program_sha256(model)),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": epoch,
        "step": step,
        "metrics": dict(metrics),
        "spec": spec,
        "dataset": dataset.name,
        "normalization": {"mean": list(dataset.mean), "std": list(dataset.std)},
        "classes": list(dataset.classes),
    }
    rest = dict(training_state)
    for key, name in _TOP_LEVEL.items():
        blob[name] = rest.pop(key)
    blob["training_state"] = rest
    return blob


def build(end: EpochEnd, spec: dict, dataset: ImageDataset) -> dict:
    """The epoch-end checkpoint."""
    state = end.training_state or {
        "optimizer": end.optimizer.state_dict(),
        "scheduler": end.scheduler.state_dict() if end.scheduler is not None else None,
        "rng": {"torch": torch.get_rng_state(), "shuffle": end.generator.get_state()}}
    return build_blob(end.model, state, end.epoch, end.step, end.metrics, spec, dataset)


def training_state_of(blob: dict) -> dict | None:
    """The TrainState.state_dict() a checkpoint holds, or None (written before resumes
    existed, or by another tool)."""
    rest = blob.get("training_state")
    if not rest:
        return None
    return {**rest, **{key: blob[name] for key, name in _TOP_LEVEL.items()}}


class CheckpointWriter:
    """on_epoch_end hook: save the epoch's file atomically, then hand its row (size, sha256,
    metrics) to `record`, which stores it and applies retention when the database allows."""

    def __init__(self, job_id: str, spec: dict, dataset: ImageDataset, store: ArtifactStore,
                 record: Callable[[dict], None]):
        self.job_id, self.spec, self.dataset = job_id, spec, dataset
        self.store, self.record = store, record

    def __call__(self, end: EpochEnd) -> None:
        blob = build(end, self.spec, self.dataset)
        key = checkpoint_key(self.job_id, end.epoch)
        size, sha = self.store.save(key, lambda f: torch.save(blob, f))
        # The epoch file supersedes any mid-epoch resume file written before it.
        self.store.delete(resume_key(self.job_id))
        log.info("job %s: checkpoint epoch %d (%d bytes, sha256 %s…)", self.job_id, end.epoch,
                 size, sha[:12])
        self.record({"epoch": end.epoch, "step": end.step, "storage_key": key,
                     "size_bytes": size, "sha256": sha, "metrics": blob["metrics"]})


class ResumeWriter:
    """Mid-epoch checkpoint: the whole training state in one file per job, overwritten
    atomically; `pending` gives the points not yet in the database, saved with it."""

    def __init__(self, job_id: str, spec: dict, dataset: ImageDataset, store: ArtifactStore,
                 pending: Callable[[], list[dict]] = list):
        self.job_id, self.spec, self.dataset = job_id, spec, dataset
        self.store, self.pending = store, pending

    def __call__(self, state: TrainState) -> None:
        blob = build_blob(state.model, state.state_dict(), state.epoch - 1, state.step,
                          state.final_metrics, self.spec, self.dataset)
        blob["pending_points"] = self.pending()
        size, _ = self.store.save(resume_key(self.job_id), lambda f: torch.save(blob, f))
        log.info("job %s: resume checkpoint at epoch %d step %d (%d bytes)", self.job_id,
                 state.epoch, state.step, size)
