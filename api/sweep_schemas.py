"""The answers of the sweep routes: a sweep with its trial counts, best trial and epochs."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from core.states import SweepStatus
from core.sweeps.summary import Summary
from core.tables import Sweep


class BestTrial(BaseModel):
    job_id: str
    trial: int
    value: float  # the sweep's metric at the trial's last epoch
    values: dict[str, Any]  # its sampled values, by spec path
    checkpoint: str  # where its best checkpoint downloads


class RungTrial(BaseModel):
    trial: int
    job_id: str
    value: float | None  # the metric at the rung's epoch; null when it diverged
    promoted: bool


class Rung(BaseModel):
    rung: int
    epoch: int
    reached: int  # trials that reached it
    cutoff: float | None  # the worst value among its best ⌊reached/η⌋; null while none
    trials: list[RungTrial]


class SweepPublic(BaseModel):
    id: str
    owner: str | None
    name: str
    status: SweepStatus
    strategy: str
    metric: str
    mode: str
    max_trials: int
    max_concurrent: int
    seed: int
    spec: dict  # the body it was created with, its defaults filled in
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: str | None
    waiting: str | None  # why no new trial could start at the last try (a tenant cap)
    trials: dict[str, int]  # created, and how many are in each job status
    best: BestTrial | None  # the best succeeded trial so far (ties: the lower number)
    epochs_spent: int  # epochs its trials have trained
    epochs_full: int  # epochs a full search of the same trials trains
    # asha: each rung's epoch, the trials that reached it (best first) with their metric
    # there and whether they were promoted, and its cutoff; [] for grid and random.
    rungs: list[Rung]

    @classmethod
    def from_row(cls, sweep: Sweep, summary: Summary) -> "SweepPublic":
        return cls(id=sweep.id, owner=sweep.owner, name=sweep.name,
                   status=SweepStatus(sweep.status), strategy=sweep.strategy,
                   metric=sweep.metric, mode=sweep.mode, max_trials=sweep.max_trials,
                   max_concurrent=sweep.max_concurrent, seed=sweep.seed, spec=sweep.spec,
                   created_at=sweep.created_at, updated_at=sweep.updated_at,
                   finished_at=sweep.finished_at, error=sweep.error, waiting=sweep.waiting,
                   trials=summary.trials,
                   best=BestTrial(**summary.best) if summary.best else None,
                   epochs_spent=summary.epochs_spent, epochs_full=summary.epochs_full,
                   rungs=[Rung(**rung) for rung in summary.rungs])
