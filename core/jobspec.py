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
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from core.builtin_datasets import BUILTIN_DATASETS, DATASET_NAMES
from core.checkpoint_format import REF_REGEX
from core.config import get_settings
from core.errors import FieldError
from core.ids import ID_REGEX, is_id
from core.text import StorableStr, echo
from models import MODEL_NAMES, MODELS, unknown_model_message


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
_MODEL_SCHEMA = WithJsonSchema({
    "anyOf": [{"type": "string", "enum": list(MODEL_NAMES), "title": "a built-in model"},
              {"type": "string", "pattern": ID_REGEX,
               "title": "the id of one of your own models (POST /models)"}],
    "description": "the network architecture"})
_DATASET_SCHEMA = WithJsonSchema({
    "anyOf": [{"type": "string", "enum": list(DATASET_NAMES), "title": "a built-in dataset"},
              {"type": "string", "pattern": ID_REGEX,
               "title": "the id of an uploaded dataset that is ready"}],
    "description": "a built-in dataset's name, or the id of an uploaded dataset"})


MAX_WORLD_SIZE = 8
MAX_CROP_PADDING = 16
MAX_IMAGE_SIZE = 1024
# The fewest classes a dataset has (an upload needs 2): an upload's parameter count at
# submit is at least the model's with this many.
MIN_CLASSES = 2


def _square(value: Any) -> Any:
    """image_size: an integer is a square, stored as [n, n] (one job, one hash)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    return value


ImageSide = Annotated[Int, Field(ge=1, le=MAX_IMAGE_SIZE)]
_IMAGE_SIZE_SCHEMA = WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_IMAGE_SIZE},
              {"type": "array", "items": {"type": "integer", "minimum": 1,
                                          "maximum": MAX_IMAGE_SIZE},
               "minItems": 2, "maxItems": 2}, {"type": "null"}],
    "default": None,
    "description": "torchvision models: the (height, width) images are resized to on the "
                   "device, an integer for a square; default the dataset's size with each "
                   "side raised to the model's minimum (a fixed-size model: its size)"})
ImageSize = Annotated[list[ImageSide] | None, BeforeValidator(_square), _IMAGE_SIZE_SCHEMA]

# torchvision's recommended weights of a model (models.pretrained resolves it in the worker).
DEFAULT_WEIGHTS = "DEFAULT"
_PRETRAINED_SCHEMA = WithJsonSchema({
    "anyOf": [{"type": "string", "enum": [DEFAULT_WEIGHTS, *sorted(
        {w for info in MODELS.values() if info.zoo for w in info.zoo.weights})]},
              {"type": "null"}],
    "default": None,
    "description": "torchvision models: start from torchvision's published weights of the "
                   "model, DEFAULT or one of its weights' names (GET /models lists them); "
                   "the classifier head is new when the dataset's classes differ"})


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
    # torchvision models only (GET /models: each one's minimum or fixed size); null: the
    # default (the model's fixed size, or the dataset's size raised to its minimum).
    image_size: ImageSize = Field(None, min_length=2, max_length=2)
    # torchvision models only: "backbone" trains the classifier head alone (every other
    # parameter, and the BatchNorm statistics, as the job started them).
    freeze: Literal["none", "backbone"] = "none"

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
    # torchvision's published weights to start from (not with init_from).
    pretrained: Annotated[str | None, _PRETRAINED_SCHEMA] = Field(None, max_length=100)
    # Wall time the job may spend training and evaluating, over all its attempts; past it
    # the job fails with the reason.
    max_runtime_seconds: OptionalInt = Field(None, ge=1, le=365 * 24 * 3600)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        # A program's id is checked against the database by the API (core.programs).
        if value not in MODEL_NAMES and not is_id(value):
            raise ValueError(unknown_model_message(value, echo(value)))
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        # An upload id is checked against the database by the API (it must be ready).
        if value not in DATASET_NAMES and not is_id(value):
            raise ValueError(f"unknown dataset {echo(value)}; allowed: {', '.join(DATASET_NAMES)} "
                             "or the id of an uploaded dataset")
        return value

    @model_validator(mode="after")
    def _model_takes_the_job(self) -> "JobSpec":
        """image_size, freeze and pretrained fit the model (pretrained not beside
        init_from), and the model is under the parameter cap with the dataset's classes (an
        upload's: at least MIN_CLASSES; see check_parameter_cap)."""
        size = self.hyperparameters.image_size
        problem = image_size_problem(self.model, size)
        if problem:
            raise _located(("hyperparameters", "image_size"), problem, size)
        freeze = self.hyperparameters.freeze
        if freeze != "none" and _zoo(self.model) is None:
            raise _located(("hyperparameters", "freeze"), (
                f"applies to torchvision models only: {self.model} has no classifier head "
                "of its own to train alone; allowed: 'none'"), freeze)
        problem = pretrained_problem(self.model, self.pretrained, self.init_from is not None)
        if problem:
            raise _located(("pretrained",), problem, self.pretrained)
        info = BUILTIN_DATASETS.get(self.dataset)
        problem = parameter_cap_problem(self.model,
                                        len(info.classes) if info else MIN_CLASSES)
        if problem:
            raise _located(("model",), problem, self.model)
        return self

    def resolved(self) -> dict:
        """The spec with every default filled in, as stored on the job row."""
        data = self.model_dump(mode="json")
        data["name"] = data["name"] or f"{self.model}-{self.dataset}"
        return data


def _zoo(model: str):
    """The model's size-table entry; None for a built-in or a program (an id)."""
    info = MODELS.get(model)
    return info.zoo if info else None


def image_size_problem(model: str, size: list[int] | None) -> str | None:
    """Why hyperparameters.image_size cannot go with `model`, or None."""
    zoo = _zoo(model)
    if size is None:
        return None
    if zoo is None:
        return (f"applies to torchvision models only: {model} adapts its layers to the "
                "dataset's image size; leave image_size out")
    return zoo.size_problem((size[0], size[1]))


def pretrained_problem(model: str, weights: str | None, init_from: bool = False) -> str | None:
    """Why `pretrained` cannot start `model`, or None: the size table's weights' names (no
    torch needed); DEFAULT is torchvision's default for it."""
    if weights is None:
        return None
    if init_from:
        return ("pretrained and init_from both say what the job starts from; give one: "
                "pretrained (torchvision's published weights) or init_from (another job's "
                "checkpoint)")
    zoo = _zoo(model)
    if zoo is None or not zoo.weights:
        return (f"{model} has no published weights; allowed: leave pretrained out, or a "
                "torchvision.<name> model (GET /models lists each one's weights)")
    if weights != DEFAULT_WEIGHTS and weights not in zoo.weights:
        return (f"{model} has no weights {echo(weights)}; allowed: {DEFAULT_WEIGHTS} "
                f"(torchvision's default for it), {', '.join(zoo.weights)}")
    return None


def parameter_cap_problem(model: str, num_classes: int) -> str | None:
    """Why `model` with num_classes classes is over TRAINHUB_MAX_MODEL_PARAMETERS, or None
    (built-ins, whose size follows the dataset's shape, are small: never over it)."""
    zoo, cap = _zoo(model), get_settings().max_model_parameters
    if zoo is None or not cap or zoo.parameters(num_classes) <= cap:
        return None
    return (f"{model} has {zoo.parameters(num_classes):,} parameters with {num_classes} "
            f"classes, over this server's cap of {cap:,} (TRAINHUB_MAX_MODEL_PARAMETERS); "
            "allowed: a model with fewer (GET /models lists each one's count)")


def check_parameter_cap(model: str, num_classes: int) -> None:
    """The cap at the dataset's own class count (an upload's, once the API has read it):
    FieldError on `model` (a 422) when over."""
    problem = parameter_cap_problem(model, num_classes)
    if problem:
        raise FieldError("model", problem)


def _located(loc: tuple[str, ...], message: str, value: Any) -> ValidationError:
    """A validation error at `loc` (a model validator's own would sit on the whole body)."""
    return ValidationError.from_exception_data("JobSpec", [InitErrorDetails(
        type=PydanticCustomError("value_error", message), loc=loc, input=value)])
