"""TensorBoard event files of a job, beside the database: the same metric names, the
global step as the x axis (`tensorboard --logdir $TRAINHUB_DATA_DIR/tensorboard`)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


class TensorBoardLog:
    def __init__(self, directory: Path, purge_step: int | None = None):
        # purge_step: a resumed run drops what an earlier attempt wrote from that step on,
        # so TensorBoard shows each point once.
        self.directory, self.purge_step = directory, purge_step
        self._writer = None

    def add(self, points: Sequence) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.directory.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.directory), purge_step=self.purge_step)
        for p in points:
            self._writer.add_scalar(p.name, p.value, p.step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
