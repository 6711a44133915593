"""Metric points: their names, and the non-finite rule; storing them exactly once
(core.metrics.store) and reading them back in pages (core.metrics.pages).

The non-finite rule: a diverged value (NaN or infinite) stays as it is in metric_points,
and is null wherever it is JSON (the API, live events, final_metrics, checkpoint rows):
JSON and Postgres' JSON type have neither NaN nor infinity."""
from __future__ import annotations

import math
from typing import Mapping

# A point is unique by (job, name, step); docs/concepts.md describes each name.
METRIC_NAMES = ("loss", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy",
                "val_loss", "val_accuracy", "samples_per_second", "lr")


def finite(value: float | None) -> float | None:
    """A diverged value becomes None (null in JSON); any other value stays."""
    return value if value is not None and math.isfinite(value) else None


def finite_values(metrics: Mapping[str, float | None]) -> dict[str, float | None]:
    return {name: finite(value) for name, value in metrics.items()}
