"""Metric names, and how a diverged (NaN or infinite) value is stored and shown: as null."""
from __future__ import annotations

import math
from typing import Mapping

# A point is unique by (job, name, step); docs/concepts.md describes each name.
METRIC_NAMES = ("loss", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy",
                "val_loss", "val_accuracy", "samples_per_second", "lr")


def finite(value: float | None) -> float | None:
    """JSON and Postgres' JSON type have no NaN or infinity: a diverged value becomes None."""
    return value if value is not None and math.isfinite(value) else None


def finite_values(metrics: Mapping[str, float | None]) -> dict[str, float | None]:
    return {name: finite(value) for name, value in metrics.items()}
