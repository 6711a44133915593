"""The loop's reporter for a real job: the job's reporter (worker.sink) with its
TensorBoard event files beside it.

Every point goes to both; the event files (worker.tensorboard) are flushed whenever the loop
asks whether to stop."""
from __future__ import annotations

from typing import Sequence

from worker.reporting import Metric
from worker.sink import JobReporter
from worker.tensorboard import TensorBoardLog


class TensorBoardTee:
    """A Reporter (worker.reporting): the job's reporter, with its event files beside it."""

    def __init__(self, reporter: JobReporter, tensorboard: TensorBoardLog):
        self.reporter, self.tensorboard = reporter, tensorboard

    def metrics(self, points: Sequence[Metric]) -> None:
        self.reporter.raise_writer_error()  # a failed writer fails the job before any file
        self.tensorboard.add(points)
        self.reporter.metrics(points)

    def progress(self, epoch: int, step: int, total_steps: int) -> None:
        self.reporter.progress(epoch, step, total_steps)

    def should_stop(self) -> bool | str:
        self.reporter.raise_writer_error()
        self.tensorboard.flush()
        return self.reporter.should_stop()
