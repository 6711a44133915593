"""POST /sweeps' body (SweepSpec) and its checks: every trial the sweep would make is a valid
job spec, else a FieldError naming the field, before anything runs."""
from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import FieldError, validator_reason
from core.jobspec import JobSpec, StorableStr
from core.sweeps.space import Space, set_path

MAX_TRIALS = 1000
# Metrics every job writes once an epoch (val_* only with validation_fraction > 0); a trial's
# value is its last epoch's.
SWEEP_METRICS = ("eval_accuracy", "eval_loss", "val_accuracy", "val_loss", "train_accuracy",
                 "train_loss")
STRATEGIES = ("grid", "random", "asha")
# Paths whose values a sweep sets itself (a trial's name) or that hold a whole object.
NOT_SEARCHABLE = ("name",)


class AshaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_epochs: int = Field(1, ge=1, le=1000)  # the first rung
    reduction_factor: int = Field(3, ge=2, le=100)  # η: the top 1/η of a rung goes on
    max_epochs: int = Field(9, ge=1, le=1000)  # the last rung

    @model_validator(mode="after")
    def _rungs_grow(self) -> "AshaSpec":
        if self.max_epochs < self.min_epochs:
            raise ValueError(f"max_epochs ({self.max_epochs}) is below min_epochs "
                             f"({self.min_epochs})")
        return self


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StorableStr | None = Field(None, min_length=1, max_length=180)
    base: JobSpec
    space: dict[str, Any] = Field(min_length=1, max_length=64)
    strategy: Literal["grid", "random", "asha"] = "random"
    metric: Literal[SWEEP_METRICS] = "eval_accuracy"  # type: ignore[valid-type]
    mode: Literal["max", "min"] | None = None  # default: max for *_accuracy, min for *_loss
    max_trials: int | None = Field(None, ge=1, le=MAX_TRIALS)  # random: 10; grid: its size
    max_concurrent: int = Field(1, ge=1, le=100)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    asha: AshaSpec | None = None


def _model_in(annotation) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def check_path(path: str) -> None:
    """A path must name one value of the job spec (hyperparameters.lr, model, ...)."""
    model: type[BaseModel] | None = JobSpec
    parts = path.split(".")
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields or (depth == 0 and part in NOT_SEARCHABLE):
            allowed = ", ".join(".".join([*parts[:depth], f]) for f in fields
                                if depth or f not in NOT_SEARCHABLE)
            raise FieldError(f"space.{path}", f"{path!r} is not a job spec value; allowed "
                                              f"at that level: {allowed}")
        model = _model_in(fields[part].annotation)
        if model is None and depth < len(parts) - 1:
            raise FieldError(f"space.{path}", f"{'.'.join(parts[:depth + 1])} holds one "
                                              "value, not an object")
    if model is not None:
        raise FieldError(f"space.{path}", f"{path} is an object; search one of its values: "
                                          f"{', '.join(f'{path}.{f}' for f in model.model_fields)}")


def _located(exc: ValidationError, trial: int, values: dict[str, Any]) -> FieldError:
    """A trial's validation error, located at the space path that caused it (else in base)."""
    error = exc.errors()[0]
    loc, reason = ".".join(str(p) for p in error["loc"]), validator_reason(error["msg"])
    for path, value in values.items():
        if loc == path or loc.startswith(path + ".") or path.startswith(loc + "."):
            return FieldError(f"space.{path}", f"trial {trial} draws {path}={value!r}, which "
                                               f"no job takes: {reason}")
    culprits = ", ".join(f"{p}={v!r}" for p, v in values.items())
    return FieldError(f"base.{loc}" if loc else "base",
                      f"trial {trial} ({culprits}) is not a valid job: {reason}")


class Checked:
    """A sweep spec that passed: what the sweep row stores, and its trials' job specs."""

    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self.base = spec.base.model_dump(mode="json", exclude_unset=True)
        self.space = Space(spec.space)
        self.mode = spec.mode or ("max" if spec.metric.endswith("accuracy") else "min")
        default = self.space.grid_size() if spec.strategy == "grid" else 10
        self.max_trials = spec.max_trials or min(default, MAX_TRIALS)
        self.name = spec.name or f"sweep-{spec.base.model}-{spec.base.dataset}"

    def stored(self) -> dict:
        return {"name": self.name, "base": self.base, "space": self.spec.space,
                "strategy": self.spec.strategy, "metric": self.spec.metric, "mode": self.mode,
                "max_trials": self.max_trials, "max_concurrent": self.spec.max_concurrent,
                "seed": self.spec.seed,
                "asha": self.spec.asha.model_dump() if self.spec.asha else None}


def trial_job(stored: dict, trial: int) -> tuple[JobSpec, dict[str, Any]]:
    """Trial `trial`'s job spec and sampled values, from a sweep's stored spec."""
    values = Space(stored["space"]).values(stored["strategy"], stored["seed"], trial)
    raw = dict(stored["base"], name=f"{stored['name']}-t{trial}")
    for path, value in values.items():
        raw = set_path(raw, path, value)
    if stored.get("asha"):  # a trial trains up to the last rung, pausing at each on the way
        raw = set_path(raw, "hyperparameters.epochs", stored["asha"]["max_epochs"])
    try:
        return JobSpec.model_validate(raw), values
    except ValidationError as exc:
        raise _located(exc, trial, values) from None


def _check_bounds(stored: dict, space: Space) -> None:
    """Each distribution's bounds (each listed value) make a valid job with trial 0's other
    values: a range that reaches past what the job spec takes is refused, though a draw
    might never land there."""
    first = space.values(stored["strategy"], stored["seed"], 0)
    for path, dist in space.dists.items():
        for value in dist.extremes():
            raw = dict(stored["base"])
            for other, drawn in {**first, path: value}.items():
                raw = set_path(raw, other, drawn)
            try:
                JobSpec.model_validate(raw)
            except ValidationError as exc:
                reason = validator_reason(exc.errors()[0]["msg"])
                raise FieldError(f"space.{path}", f"{path}={value!r} (a bound of its "
                                                  f"{dist.kind}) is not a value a job takes: "
                                                  f"{reason}") from None


def check(spec: SweepSpec) -> tuple[Checked, list[JobSpec]]:
    """The checks FastAPI's validation cannot make; every trial's job spec, in order."""
    checked = Checked(spec)
    for path in spec.space:
        check_path(path)
    if spec.strategy == "grid":
        checked.space.check_grid()
        size = checked.space.grid_size()
        if size > MAX_TRIALS:
            raise FieldError("space", f"the grid has {size} points; a sweep makes at most "
                                      f"{MAX_TRIALS} trials")
        if spec.max_trials and spec.max_trials > size:
            raise FieldError("max_trials", f"the grid has {size} points: at most {size}; "
                                           f"got {spec.max_trials}")
    if spec.strategy == "asha" and spec.asha is None:
        raise FieldError("asha", "strategy asha needs {min_epochs, reduction_factor, "
                                 "max_epochs}")
    if spec.strategy != "asha" and spec.asha is not None:
        raise FieldError("asha", f"applies to strategy asha only, not {spec.strategy}")
    if spec.strategy == "asha" and "hyperparameters.epochs" in spec.space:
        raise FieldError("space.hyperparameters.epochs", "asha sets each trial's epochs by "
                         "its rungs (asha.min_epochs to asha.max_epochs); leave epochs out")
    if spec.strategy == "asha" and (spec.base.hyperparameters.world_size > 1
                                    or "hyperparameters.world_size" in spec.space):
        raise FieldError("base.hyperparameters.world_size", "asha pauses trials at rung ends, "
                         "which multi-process (DDP) jobs do not yet; allowed: 1")
    stored = checked.stored()
    _check_bounds(stored, checked.space)
    trials = [trial_job(stored, n)[0] for n in range(checked.max_trials)]
    if spec.metric.startswith("val_"):
        held_out = [t for t in trials if t.hyperparameters.validation_fraction > 0]
        if len(held_out) < len(trials):
            raise FieldError("metric", f"{spec.metric} is written only by a job that holds "
                                       "out validation data: set "
                                       "base.hyperparameters.validation_fraction above 0")
    return checked, trials
