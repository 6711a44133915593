"""What an attempt starts from: the job's dataset (a built-in, or an upload its owner may
use), the model, and the model's weights: the job's newest saved training state to resume
from, init_from's checkpoint, torchvision's published weights (pretrained), or fresh."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from sqlalchemy import select

from core import checkpoint_format as ckpt
from core import datasets, jobs
from core.artifacts import resume_key
from core.config import Settings
from core.db import session_scope
from core.errors import FieldError
from core.init_from import load_init_from
from core.jobspec import Hyperparameters
from core.program_archive import ProgramRejected
from core.program_models import ProgramMissing, build_model
from core.tables import Job
from core.tenancy import tenant_of
from core.tensor_datasets import ImageDataset
from models import pretrained
from worker.checkpointing import training_state_of
from worker.control import progress_epoch
from worker.data import read_dataset
from worker.reporting import Metric, Reporter

log = logging.getLogger(__name__)


class JobInputError(Exception):
    """Something the job asked for cannot be used; the message is for the user."""


@dataclass
class JobInputs:
    hp: Hyperparameters
    owner: str | None  # uploads and init_from: only what the owner may use
    source: dict  # where the dataset is read from (dataset_source)
    dataset: ImageDataset
    model: torch.nn.Module
    resume: dict | None  # the training state to resume from; None: a fresh start
    resume_file: str | None  # its file's key (a DDP job's other ranks load the same)


def read_inputs(job_id: str, spec: dict, settings: Settings, store,
                reporter: Reporter) -> JobInputs:
    """The seeded dataset and model, with the resume state's weights loaded (its points that
    the database missed go to reporter). The order is the RNG's: seed, data, model. A job
    with pretrained weights normalises its images with theirs (every attempt, every rank)."""
    hp = Hyperparameters(**spec["hyperparameters"])
    torch.manual_seed(hp.seed)
    owner = job_owner(job_id)
    source = dataset_source(spec["dataset"], owner)
    dataset = read_dataset(source, settings, store)
    dataset = dataset.normalized_with(pretrained.job_normalization(spec, dataset.shape[0]))
    log.info("job %s: dataset %s loaded: %d train and %d test images of shape %s, "
             "%d classes", job_id, source.get("name", spec["dataset"]), len(dataset.train),
             len(dataset.test), "x".join(map(str, dataset.shape)), len(dataset.classes))
    model = build_job_model(spec["model"], dataset, store)
    resume, resume_file = load_resume_state(job_id, model, store, reporter)
    return JobInputs(hp, owner, source, dataset, model, resume, resume_file)


def start_weights(job_id: str, attempt: int, spec: dict, inputs: JobInputs, store) -> None:
    """A fresh start takes init_from's or pretrained's weights when it names some; a resumed
    one records where it resumes (its weights are loaded already)."""
    resume = inputs.resume
    if resume is None and spec.get("init_from"):
        load_initial_weights(inputs.model, spec, inputs.dataset, store, inputs.owner)
    elif resume is None and spec.get("pretrained"):
        load_pretrained_weights(inputs.model, spec, inputs.dataset)
    elif resume is not None:
        with session_scope() as session:
            jobs.set_resumed_from(session, job_id, attempt, resume["epoch"], resume["step"],
                                  progress_epoch(resume["epoch"], resume["batch"]))
        log.info("job %s: resuming at epoch %d, step %d", job_id, resume["epoch"],
                 resume["step"])


def build_job_model(name: str, dataset: ImageDataset, store) -> torch.nn.Module:
    """The job's fresh network: a built-in, or its tenant's program model (whose files
    gone or refused fail the job in one line)."""
    try:
        return build_model(store, name, dataset.shape, len(dataset.classes))
    except (ProgramMissing, ProgramRejected) as exc:
        raise JobInputError(str(exc)) from None


def load_resume_state(job_id: str, model, store,
                      reporter: Reporter) -> tuple[dict | None, str | None]:
    """The newest saved training state of this job (mid-epoch file or last epoch
    checkpoint), with its weights loaded into model, and the file's key (a DDP job's other
    ranks load the same); (None, None) for a fresh start."""
    with session_scope() as session:
        rows = ckpt.job_checkpoints(session, job_id)
    candidates = []
    if store.exists(resume_key(job_id)):
        candidates.append(resume_key(job_id))
    if rows:
        candidates.append(rows[0].storage_key)
    best_blob, best_key = None, None
    for key in candidates:
        try:
            with store.open(key) as f:
                blob = ckpt.load(f)
        except (ckpt.CheckpointError, OSError) as exc:
            log.warning("job %s: ignoring unreadable checkpoint %s: %s", job_id, key, exc)
            continue
        if training_state_of(blob) is not None and (
                best_blob is None or blob["step"] > best_blob["step"]):
            best_blob, best_key = blob, key
    if best_blob is None:
        return None, None
    model.load_state_dict(best_blob["model_state"])
    pending = best_blob.get("pending_points") or []
    if pending:  # points the database missed before that attempt stopped
        reporter.metrics([Metric(**p) for p in pending])
    return training_state_of(best_blob), best_key


def job_owner(job_id: str) -> str | None:
    with session_scope() as session:
        return session.scalar(select(Job.owner).where(Job.id == job_id))


def dataset_source(ref: str, owner: str | None = None) -> dict:
    """Where the job's dataset is read from (worker.data.read_dataset): a built-in by name,
    or a ready upload by id that the job's owner may use."""
    if not datasets.is_upload_ref(ref):
        return {"builtin": ref}
    with session_scope() as session:
        try:
            view = datasets.resolve(session, ref, tenant_of(session, owner))
        except datasets.DatasetNotUsable as exc:
            raise JobInputError(exc.message) from None
    return {"upload": ref, "key": view.cache_key, "name": view.name}


def load_pretrained_weights(model, spec: dict, dataset: ImageDataset) -> None:
    """pretrained: torchvision's published weights, from the torch hub cache (or downloaded
    into it); a file missing offline or unlike its name's hash fails the job in one line."""
    try:
        done = pretrained.load_pretrained(model, pretrained.job_weights(spec), dataset.classes)
    except pretrained.PretrainedError as exc:
        raise JobInputError(f"pretrained: {exc}") from None
    log.info("%s; images normalised with mean %s, std %s", done,
             _rounded(dataset.mean), _rounded(dataset.std))


def _rounded(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def load_initial_weights(model, spec: dict, dataset: ImageDataset, store,
                         owner: str | None = None) -> None:
    """init_from: copy another of the owner's jobs' checkpointed weights into the model."""
    target = ckpt.architecture(spec["model"], dataset.shape, len(dataset.classes))
    with session_scope() as session:
        try:
            row, blob = load_init_from(session, store, spec["init_from"], target,
                                       tenant_of(session, owner))
        except FieldError as exc:
            raise JobInputError(f"init_from: {exc.message}") from None
    model.load_state_dict(blob["model_state"])
    log.info("initialised from job %s epoch %d", spec["init_from"]["job_id"], row.epoch)
