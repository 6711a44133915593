"""What GET /sweeps/{id} says of a sweep beyond its row: its trials by status, the best
trial so far, the epochs spent and those a full search of the same trials would spend."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.jobspec import Hyperparameters
from core.metrics import finite
from core.states import JobStatus
from core.sweeps.asha import best_of_rungs, rung_table
from core.sweeps.spec import trial_job
from core.tables import Job, MetricPoint, Sweep

# One point of this metric per trained epoch, whatever the job holds out.
EPOCH_METRIC = "eval_loss"


@dataclass
class Summary:
    trials: dict[str, int] = field(default_factory=lambda: {
        "created": 0, **{s.value: 0 for s in JobStatus}})
    best: dict[str, Any] | None = None
    epochs_spent: int = 0
    epochs_full: int = 0
    rungs: list[dict] = field(default_factory=list)  # asha's rung table (asha.rung_table)


def trial_value(sweep: Sweep, job: Job) -> float | None:
    """A trial's value: the sweep's metric at its last epoch (finite, else None)."""
    return finite((job.final_metrics or {}).get(sweep.metric))


def _better(sweep: Sweep, value: float, trial: int, best: dict | None) -> bool:
    if best is None:
        return True
    if value == best["value"]:
        return trial < best["trial"]  # ties: the lower trial number
    return value > best["value"] if sweep.mode == "max" else value < best["value"]


def epochs_full(sweep: Sweep) -> int:
    """Epochs all max_trials trials would train, each to its full length."""
    return _epochs_full(sweep.id, sweep.max_trials, json.dumps(sweep.spec, sort_keys=True))


@lru_cache(maxsize=1024)
def _epochs_full(_sweep_id: str, max_trials: int, spec_json: str) -> int:
    # With epochs searched, every trial's spec is drawn (1,000 at most): once per sweep, as
    # its spec never changes, not at every read.
    stored = json.loads(spec_json)
    if stored.get("asha"):
        return max_trials * stored["asha"]["max_epochs"]
    if "hyperparameters.epochs" not in stored["space"]:
        epochs = stored["base"].get("hyperparameters", {}).get(
            "epochs", Hyperparameters.model_fields["epochs"].default)
        return max_trials * epochs
    return sum(trial_job(stored, n)[0].hyperparameters.epochs for n in range(max_trials))


def summarize(session: Session, sweeps: list[Sweep]) -> dict[str, Summary]:
    """Each sweep's Summary, in two queries for the lot."""
    out = {s.id: Summary(epochs_full=epochs_full(s)) for s in sweeps}
    if not sweeps:
        return out
    by_id = {s.id: s for s in sweeps}
    trials = session.execute(select(Job.sweep_id, Job.id, Job.trial, Job.status,
                                    Job.final_metrics, Job.trial_values)
                             .where(Job.sweep_id.in_(list(by_id)))).all()
    for row in trials:
        summary, sweep = out[row.sweep_id], by_id[row.sweep_id]
        summary.trials["created"] += 1
        summary.trials[row.status] += 1
        value = trial_value(sweep, row) if row.status == JobStatus.succeeded.value else None
        if value is not None and _better(sweep, value, row.trial, summary.best):
            summary.best = {"job_id": row.id, "trial": row.trial, "value": value,
                            "values": row.trial_values or {},
                            "checkpoint": f"/jobs/{row.id}/checkpoints/best"}
    epochs = session.execute(
        select(Job.sweep_id, func.count(MetricPoint.id))
        .join(MetricPoint, MetricPoint.job_id == Job.id)
        .where(Job.sweep_id.in_(list(by_id)), MetricPoint.name == EPOCH_METRIC)
        .group_by(Job.sweep_id)).all()
    for sweep_id, count in epochs:
        out[sweep_id].epochs_spent = count
    for sweep in sweeps:
        out[sweep.id].rungs = rung_table(session, sweep)
        if out[sweep.id].rungs:  # asha: the best at the highest rung reached
            best = best_of_rungs(out[sweep.id].rungs)
            values = {row.trial: row.trial_values for row in trials if row.sweep_id == sweep.id}
            out[sweep.id].best = best and {
                "job_id": best["job_id"], "trial": best["trial"], "value": best["value"],
                "values": values.get(best["trial"]) or {},
                "checkpoint": f"/jobs/{best['job_id']}/checkpoints/best"}
    return out
