"""The job spec that the API validates and the worker trusts: defaults are the tutorial's."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.catalog import DATASET_NAMES
from core.checkpoints import REF_REGEX
from core.ids import ID_REGEX, is_id
from models import MODEL_NAMES


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(2, ge=1, le=1000)
    batch_size: int = Field(4, ge=1, le=65536)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.001, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, le=1)
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    scheduler: Literal["none", "step", "cosine", "onecycle"] = "none"
    seed: int = Field(0, ge=0, le=2**32 - 1)
    log_every: int = Field(2000, ge=1)
    validation_fraction: float = Field(0.0, ge=0, le=0.5)

    @model_validator(mode="after")
    def _nesterov_needs_sgd_momentum(self) -> "Hyperparameters":
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov: true needs optimizer 'sgd' with momentum > 0")
        return self


class InitFrom(BaseModel):
    """Start from another job's weights (fine-tuning); the optimizer starts fresh."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(pattern=ID_REGEX)
    checkpoint: str = Field("best", pattern=REF_REGEX,
                            description="latest, best or an epoch number")


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    model: str
    dataset: str
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    init_from: InitFrom | None = None
    # Wall time the job may spend training and evaluating, over all its attempts; past it
    # the job fails with the reason.
    max_runtime_seconds: int | None = Field(None, ge=1, le=365 * 24 * 3600)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODEL_NAMES:
            raise ValueError(f"unknown model {value!r}; allowed: {', '.join(MODEL_NAMES)}")
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        # An upload id is checked against the database by the API (it must be ready).
        if value not in DATASET_NAMES and not is_id(value):
            raise ValueError(f"unknown dataset {value!r}; allowed: {', '.join(DATASET_NAMES)} "
                             "or the id of an uploaded dataset")
        return value

    def resolved(self) -> dict:
        """The spec with every default filled in, as stored on the job row."""
        data = self.model_dump(mode="json")
        data["name"] = data["name"] or f"{self.model}-{self.dataset}"
        return data
