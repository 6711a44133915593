"""The job spec that the API validates and the worker trusts: defaults are the tutorial's."""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from core.builtin_datasets import DATASET_NAMES
from core.checkpoint_format import REF_REGEX
from core.ids import ID_REGEX, is_id
from core.text import StorableStr, echo
from models import MODEL_NAMES


def _finite(value: Any) -> None:
    """A NaN or an infinity (Python's json reads NaN and Infinity; "nan" and "inf" are
    strings pydantic would parse) is refused before any bound is compared with it."""
    if isinstance(value, (float, str)):
        try:
            number = float(value)
        except ValueError:
            return  # not a number at all: pydantic's own type error says so
        if not math.isfinite(number):
            raise PydanticCustomError("finite_number", "must be a finite number")


def _strict_int(value: Any) -> Any:
    if isinstance(value, bool):  # bool is an int subclass, and pydantic takes true as 1
        raise PydanticCustomError("int_type", "must be an integer, not a boolean")
    _finite(value)
    return value


def _strict_float(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "must be a number, not a boolean")
    _finite(value)
    return value


# Every integer and number of the spec: no booleans, no NaN or infinities.
Int = Annotated[int, BeforeValidator(_strict_int)]
Float = Annotated[float, BeforeValidator(_strict_float)]
# Optional: the validator wraps the whole `int | None` (inside the union, pydantic would
# write the bounds into the JSON schema as ge/le instead of minimum/maximum).
OptionalInt = Annotated[int | None, BeforeValidator(_strict_int)]

# The schema a client (or a schema fuzzer) builds valid jobs from; validation itself is
# done by the validators below, whose messages list what is allowed.
_MODEL_SCHEMA = WithJsonSchema({"type": "string", "enum": list(MODEL_NAMES),
                                "description": "the network architecture"})
_DATASET_SCHEMA = WithJsonSchema({
    "anyOf": [{"type": "string", "enum": list(DATASET_NAMES), "title": "a built-in dataset"},
              {"type": "string", "pattern": ID_REGEX,
               "title": "the id of an uploaded dataset that is ready"}],
    "description": "a built-in dataset's name, or the id of an uploaded dataset"})


MAX_WORLD_SIZE = 8
MAX_CROP_PADDING = 16


class Augment(BaseModel):
    """Training-batch augmentation, done on the job's device (never in evaluation)."""

    model_config = ConfigDict(extra="forbid")

    # Pixels of zero padding (the mean pixel, after normalisation) on each side before a
    # random crop back to the image's size; 0: no crop.
    random_crop_padding: Int = Field(0, ge=0, le=MAX_CROP_PADDING)
    # Mirror left-right with probability 0.5 per image.
    horizontal_flip: bool = False


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: Int = Field(2, ge=1, le=1000)
    batch_size: Int = Field(4, ge=1, le=65536)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: Float = Field(0.001, gt=0, le=10)
    momentum: Float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: Float = Field(0.0, ge=0, le=1)
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    scheduler: Literal["none", "step", "cosine", "onecycle"] = "none"
    seed: Int = Field(0, ge=0, le=2**32 - 1)
    log_every: Int = Field(2000, ge=1)
    validation_fraction: Float = Field(0.0, ge=0, le=0.5)
    # Processes training the job together (DDP): one GPU each on cuda, CPU processes
    # otherwise. batch_size stays the global batch, split evenly over them.
    world_size: Int = Field(1, ge=1, le=MAX_WORLD_SIZE)
    # The training forward through torch.compile (eager again, with a warning in the job's
    # log, if compiling fails). Opt-in: on a small CPU model it was not faster.
    compile: bool = False
    # Autocast of forward and loss (training and evaluation); fp16 adds a GradScaler.
    amp: Literal["off", "bf16", "fp16"] = "off"
    # Model and batches in torch.channels_last memory format (4-D inputs).
    channels_last: bool = False
    augment: Augment | None = None

    @model_validator(mode="after")
    def _nesterov_needs_sgd_momentum(self) -> "Hyperparameters":
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov: true needs optimizer 'sgd' with momentum > 0")
        return self

    @field_validator("world_size")
    @classmethod
    def _batch_splits_over_processes(cls, value: int, info: ValidationInfo) -> int:
        batch_size = info.data.get("batch_size")  # absent when it failed its own checks
        if batch_size is not None and batch_size % value:
            divisors = [n for n in range(1, MAX_WORLD_SIZE + 1) if batch_size % n == 0]
            raise ValueError(
                f"must divide batch_size {batch_size} (the global batch, split evenly over "
                f"the processes); allowed: {', '.join(map(str, divisors))}")
        return value


def _epoch_as_text(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class InitFrom(BaseModel):
    """Start from another job's weights (fine-tuning); the optimizer starts fresh."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(pattern=ID_REGEX)
    # An epoch may be given as the number it is (7) as well as text ("7"); stored as text.
    checkpoint: Annotated[str, BeforeValidator(_epoch_as_text), WithJsonSchema(
        {"anyOf": [{"type": "string", "pattern": REF_REGEX},
                   {"type": "integer", "minimum": 0, "maximum": 999_999}],
         "default": "best", "description": "latest, best or an epoch number"})] = Field(
        "best", pattern=REF_REGEX)


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StorableStr | None = Field(None, max_length=200)
    model: Annotated[str, _MODEL_SCHEMA]
    dataset: Annotated[str, _DATASET_SCHEMA]
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    init_from: InitFrom | None = None
    # Wall time the job may spend training and evaluating, over all its attempts; past it
    # the job fails with the reason.
    max_runtime_seconds: OptionalInt = Field(None, ge=1, le=365 * 24 * 3600)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODEL_NAMES:
            raise ValueError(f"unknown model {echo(value)}; allowed: {', '.join(MODEL_NAMES)}")
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        # An upload id is checked against the database by the API (it must be ready).
        if value not in DATASET_NAMES and not is_id(value):
            raise ValueError(f"unknown dataset {echo(value)}; allowed: {', '.join(DATASET_NAMES)} "
                             "or the id of an uploaded dataset")
        return value

    def resolved(self) -> dict:
        """The spec with every default filled in, as stored on the job row."""
        data = self.model_dump(mode="json")
        data["name"] = data["name"] or f"{self.model}-{self.dataset}"
        return data
