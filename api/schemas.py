"""Response shapes: every JSON route returns one (the OpenAPI schema is built from them)."""
from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

from core.config import get_settings
from core.metrics import finite, finite_values
from core.routing import job_queue, waiting_reason
from core.states import (
    ALLOWED,
    DATASET_ALLOWED,
    DATASET_TERMINAL,
    SWEEP_ALLOWED,
    TERMINAL,
    DatasetStatus,
    JobStatus,
    SweepStatus,
)
from core.tables import Checkpoint, Job, MetricPoint

Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """The paging envelope of every new list route (docs/api.md#paging): `items` in the
    route's order, and `next_cursor` to pass back as `cursor` for the next page, null on the
    last (api.paging makes both). The older lists keep their own names: GET /jobs' `jobs`,
    the metric pages' `next_since_step`, the log pages' `next_since`."""

    items: list[Item]
    next_cursor: str | None


class Progress(BaseModel):
    epoch: int
    step: int
    total_steps: int | None


class ResumePoint(BaseModel):
    epoch: int  # the epoch it continued inside
    step: int  # the global step it continued after


class TrialOf(BaseModel):
    """A sweep's trial: the sweep, the trial's number in it and its sampled values."""

    id: str
    trial: int
    values: dict


class JobPublic(BaseModel):
    id: str
    owner: str | None  # the submitting user's id; null when submitted with auth off
    name: str
    status: JobStatus
    model: str
    dataset: str
    spec: dict
    progress: Progress
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int  # claims so far: the first run and each resume
    max_attempts: int
    resumed_from: ResumePoint | None  # where the current attempt started; null: fresh
    worker: str | None
    device: str | None
    metrics: dict[str, float | None]  # the last epoch's; null where training diverged
    error: str | None
    cancel_requested: bool
    queue: str  # where it is sent: by its device (core/routing.py)
    # A queued job that no running worker can take: why (e.g. no GPU worker); else null.
    waiting: str | None = None
    sweep: TrialOf | None = None  # the sweep the job is a trial of; null for a lone job

    @classmethod
    def from_row(cls, job: Job, live_queues: set[str] | None = None) -> "JobPublic":
        queue = job_queue(get_settings().queue, job.spec or {})
        waiting = (waiting_reason(queue, job.spec or {}, live_queues)
                   if live_queues is not None and job.status == JobStatus.queued.value
                   else None)
        return cls(queue=queue, waiting=waiting,
            id=job.id, owner=job.owner, name=job.name, status=JobStatus(job.status),
            model=job.model,
            dataset=job.dataset, spec=job.spec,
            progress=Progress(epoch=job.epoch, step=job.step, total_steps=job.total_steps),
            created_at=job.created_at, updated_at=job.updated_at, started_at=job.started_at,
            finished_at=job.finished_at, attempts=job.attempts,
            max_attempts=job.max_attempts,
            resumed_from=ResumePoint(**job.resumed_from) if job.resumed_from else None,
            worker=job.worker,
            device=job.device, metrics=finite_values(job.final_metrics or {}),
            error=job.error, cancel_requested=job.cancel_requested,
            sweep=TrialOf(id=job.sweep_id, trial=job.trial, values=job.trial_values or {})
            if job.sweep_id else None)


class JobList(BaseModel):
    jobs: list[JobPublic]
    next_cursor: str | None


class MetricPointPublic(BaseModel):
    name: str
    epoch: int
    batch: int
    step: int
    value: float | None  # null when training diverged (NaN or infinity)
    time: datetime

    @classmethod
    def from_row(cls, point: MetricPoint) -> "MetricPointPublic":
        return cls(name=point.name, epoch=point.epoch, batch=point.batch, step=point.step,
                   value=finite(point.value), time=point.time)


class MetricPage(BaseModel):
    job_id: str
    metrics: list[MetricPointPublic]
    next_since_step: int | None


class CheckpointPublic(BaseModel):
    epoch: int
    step: int
    metrics: dict[str, float | None]
    size_bytes: int
    sha256: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Checkpoint) -> "CheckpointPublic":
        return cls(epoch=row.epoch, step=row.step, metrics=row.metrics or {},
                   size_bytes=row.size_bytes, sha256=row.sha256, created_at=row.created_at)


class CheckpointList(BaseModel):
    job_id: str
    best_metric: str  # what `best` is chosen on: val_accuracy or eval_accuracy
    latest: int | None  # epochs
    best: int | None
    checkpoints: list[CheckpointPublic]  # oldest first


class Normalization(BaseModel):
    mean: list[float]
    std: list[float]


class UploadProgress(BaseModel):
    done: int
    total: int | None


class DatasetPublic(BaseModel):
    """A built-in (source `builtin`) or an upload (source `upload`); fields that do not
    apply to one kind are null."""

    id: str
    name: str
    source: Literal["builtin", "upload"]
    status: DatasetStatus
    shape: list[int] | None  # (channels, height, width)
    num_classes: int | None
    classes: list[str] | None
    counts: dict | None  # builtin: {train, test}; upload: {train: {class: n}, test: {...}}
    description: str | None = None
    available: bool | None = None
    location: str | None = None  # where a built-in's files are read from
    error: str | None = None
    layout: str | None = None  # split | single | npz
    normalization: Normalization | None = None
    options: dict | None = None
    upload_bytes: int | None = None
    stored_bytes: int | None = None  # held in the artifact store (counts toward the cap)
    owner: str | None = None  # an upload's owner (user id)
    source_filename: str | None = None
    progress: UploadProgress | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


class DatasetList(BaseModel):
    datasets: list[DatasetPublic]


class ProgramPublic(BaseModel):
    """A tenant's own architecture (POST /models): torch.export programs checked at upload."""

    id: str  # what a job's `model` names it by
    name: str
    source: Literal["program"] = "program"
    input_shape: list[int]  # (channels, height, width) of one image; any batch size
    num_classes: int  # the K of its (N, K) output: a job's dataset must have as many
    parameter_count: int
    ops: list[str]  # the operators its graph calls, sorted
    source_filename: str | None  # the train-mode program's file
    eval_source_filename: str | None  # null: one program for both modes
    sha256: str  # of the train file's bytes, then the eval file's
    size_bytes: int  # held in the artifact store (counts toward the cap)
    owner: str | None
    created_at: datetime


class ModelPublic(BaseModel):
    # What a job's `model` takes: a built-in's or torchvision's name, a program's id.
    id: str
    name: str
    description: str
    input: str
    default_hyperparameters: dict
    source: Literal["program", "builtin", "torchvision"]
    # torchvision's module (resnet, vision_transformer, ...); "builtin" for the four;
    # "program" for a tenant's own.
    family: str
    # With a 10-class head; K classes: parameters + (K - 10) * parameters_per_class. null
    # for a built-in (its layers follow the dataset's shape); a program's: its own count
    # (its K is fixed: parameters_per_class null).
    parameters: int | None
    parameters_per_class: int | None
    # The smallest height and width it trains at (null: any), or the one size it takes.
    min_image_size: int | None
    fixed_image_size: list[int] | None
    # torchvision's published weights for it (names of get_model_weights(...)).
    pretrained_weights: list[str]
    program: ProgramPublic | None = None  # a program's details (GET /models/{id})


class ModelList(BaseModel):
    models: list[ModelPublic]
    # TRAINHUB_MAX_MODEL_PARAMETERS (0: none): a job whose model has more is refused.
    max_model_parameters: int


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    detail: str | None = None  # when degraded: which services are unavailable
    database: str  # "ok" or "unavailable: <why>"
    broker: str
    events: str | None = None  # only when a Redis event channel is configured


class Prediction(BaseModel):
    label: str
    index: int
    probability: float


class CheckpointUsed(BaseModel):
    ref: str
    epoch: int
    sha256: str


class PredictResponse(BaseModel):
    job_id: str
    checkpoint: CheckpointUsed
    predictions: list[list[Prediction]]  # one list per image, most probable first


class DevicePublic(BaseModel):
    name: str  # cuda:0, cpu
    type: str  # cuda | cpu
    model: str | None  # the GPU's name, or the CPU's core count
    memory_bytes: int | None


class WorkerPublic(BaseModel):
    name: str  # the Celery node name
    hostname: str
    pid: int
    queues: list[str]
    devices: list[DevicePublic]
    memory_bytes: int | None  # the host's RAM
    concurrency: int
    started_at: datetime
    last_seen: datetime


class WorkerList(BaseModel):
    workers: list[WorkerPublic]


class StateMachinePublic(BaseModel):
    statuses: list[str]  # every status, in the order a record meets them
    terminal: list[str]  # those a record never leaves
    transitions: dict[str, list[str]]  # each status a record may leave: where to

    @classmethod
    def of(cls, statuses, allowed: dict, terminal: frozenset) -> "StateMachinePublic":
        return cls(statuses=[s.value for s in statuses],
                   terminal=[s.value for s in statuses if s in terminal],
                   transitions={source.value: [t.value for t in statuses if t in targets]
                                for source, targets in allowed.items()})


class StatesPublic(BaseModel):
    """core.states as data: what a client checks a status against (is it terminal?)."""

    job: StateMachinePublic
    # An upload's statuses and moves; a built-in's status (downloads on first use, missing)
    # is computed from its files and has none.
    dataset: StateMachinePublic
    sweep: StateMachinePublic

    @classmethod
    def from_machines(cls) -> "StatesPublic":
        # core.states keeps no set of a sweep's ends: SweepStatus.is_terminal says them.
        sweep_terminal = frozenset(s for s in SweepStatus if s.is_terminal)
        return cls(job=StateMachinePublic.of(JobStatus, ALLOWED, TERMINAL),
                   dataset=StateMachinePublic.of(DatasetStatus, DATASET_ALLOWED,
                                                 DATASET_TERMINAL),
                   sweep=StateMachinePublic.of(SweepStatus, SWEEP_ALLOWED, sweep_terminal))
