"""What the training loop hands out (metric points, progress) and asks (should it stop?),
as a protocol: the worker's JobReporter (worker/sink.py) stores and publishes, scripts and
tests keep the points in memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Metric:
    name: str
    epoch: int
    batch: int
    step: int
    value: float


class Reporter(Protocol):
    def metrics(self, points: Sequence[Metric]) -> None: ...
    def progress(self, epoch: int, step: int, total_steps: int) -> None: ...
    # True (or a reason string) stops the loop at its next check; True means "cancel".
    def should_stop(self) -> bool | str: ...


class NullReporter:
    """Collects points in memory; for scripts and tests."""

    def __init__(self) -> None:
        self.points: list[Metric] = []

    def metrics(self, points: Sequence[Metric]) -> None:
        self.points.extend(points)

    def progress(self, epoch: int, step: int, total_steps: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False
