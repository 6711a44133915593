"""core.sweeps on the real Postgres: a sweep's checks (a FieldError naming the field, before
anything runs), its trials' values (from the seed and the trial's number alone), and the
scheduler: max_concurrent, a tenant's cap that makes a trial wait, two schedulers racing,
the sweep's end, and a cancel. Messages to the broker are recorded, not sent: no worker
runs here (tests/e2e/test_sweeps.py runs sweeps end to end)."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from core import jobs
from core.config import get_settings
from core.db import session_scope, upgrade_schema
from core.errors import FieldError
from core.states import JobStatus
from core.sweeps.lifecycle import cancel_sweep, create_sweep
from core.sweeps.space import Space
from core.sweeps.spec import SweepSpec, check, trial_job
from core.sweeps.summary import summarize
from core.sweeps.trials import advance
from core.tables import Job, Sweep, User
from core.tenancy import LOCAL_ADMIN, Tenant
from tests.integration.core.conftest import advance_at_once

pytestmark = pytest.mark.usefixtures("sweeps_cancelled_after")


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def job_ids(sent) -> list[str]:
    return [args[0] for _task, args, _queue in sent]


BASE = {"model": "lenet", "dataset": "digits",
        "hyperparameters": {"epochs": 1, "batch_size": 64}}


def sweep_spec(**fields) -> SweepSpec:
    body = {"base": BASE, "space": {"hyperparameters.lr": {"loguniform": [1e-3, 0.3]}},
            "strategy": "random", "max_trials": 4, **fields}
    return SweepSpec.model_validate(body)


def field_of(**fields) -> str:
    with pytest.raises(FieldError) as caught:
        check(sweep_spec(**fields))
    return caught.value.field


def trials(sweep_id: str) -> list[Job]:
    with session_scope() as session:
        rows = session.scalars(select(Job).where(Job.sweep_id == sweep_id)
                               .order_by(Job.trial)).all()
        session.expunge_all()
        return rows


def end_trial(job_id: str, status: JobStatus, accuracy: float | None = None) -> None:
    with session_scope() as session:
        jobs.transition(session, job_id, JobStatus.running, worker="t", attempts=1)
        jobs.transition(session, job_id, status,
                        final_metrics={"eval_accuracy": accuracy} if accuracy else None)


def test_a_trials_values_follow_from_the_seed_and_its_number_alone():
    raw = {"hyperparameters.lr": {"loguniform": [1e-4, 0.3]},
           "hyperparameters.momentum": {"uniform": [0.8, 0.99]},
           "hyperparameters.batch_size": {"choice": [16, 32, 64]},
           "hyperparameters.seed": {"int_uniform": [0, 9]}}
    space = Space(raw)
    drawn = [space.values("random", 7, n) for n in range(50)]
    # The same in another process, whatever order the body listed the paths in.
    reordered = Space(dict(reversed(list(raw.items()))))
    assert drawn == [reordered.values("random", 7, n) for n in range(50)]
    assert space.values("random", 7, 3) == drawn[3] and space.values("random", 8, 3) != drawn[3]
    for values in drawn:
        assert 1e-4 <= values["hyperparameters.lr"] <= 0.3
        assert 0.8 <= values["hyperparameters.momentum"] <= 0.99
        assert values["hyperparameters.batch_size"] in (16, 32, 64)
        assert values["hyperparameters.seed"] in range(10)
    assert len({v["hyperparameters.lr"] for v in drawn}) == 50
    grid = Space({"model": {"grid": ["lenet", "cnn"]},
                  "hyperparameters.lr": {"grid": [0.1, 0.01, 0.001]}})
    points = [grid.values("grid", 0, n) for n in range(grid.grid_size())]
    assert len(points) == 6 and len({tuple(p.values()) for p in points}) == 6


@pytest.mark.parametrize("fields, field", [
    ({"space": {"hyperparameters.lr": {"uniform": [0, 0.1]}}}, "space.hyperparameters.lr"),
    ({"space": {"hyperparameters.momentum": {"uniform": [0.5, 1.0]}}},
     "space.hyperparameters.momentum"),
    ({"space": {"hyperparameters.lrate": {"uniform": [0.1, 0.2]}}},
     "space.hyperparameters.lrate"),
    ({"space": {"hyperparameters": {"choice": [{}]}}}, "space.hyperparameters"),
    ({"space": {"name": {"choice": ["a"]}}}, "space.name"),
    ({"space": {"model": {"choice": []}}}, "space.model"),
    ({"space": {"model": {"choice": ["lenet", "nosuchnet"]}}}, "space.model"),
    ({"space": {"hyperparameters.lr": {"normal": [0, 1]}}}, "space.hyperparameters.lr"),
    ({"space": {"hyperparameters.lr": {"loguniform": [0, 0.1]}}}, "space.hyperparameters.lr"),
    ({"space": {"hyperparameters.epochs": {"int_uniform": [1.5, 3]}}},
     "space.hyperparameters.epochs"),
    ({"strategy": "grid", "max_trials": None,
      "space": {"hyperparameters.lr": {"uniform": [0.1, 0.2]}}}, "space.hyperparameters.lr"),
    ({"strategy": "grid", "max_trials": None,
      "space": {"hyperparameters.seed": {"grid": list(range(100))},
                "hyperparameters.lr": {"grid": [0.1 / (n + 1) for n in range(11)]}}}, "space"),
    ({"strategy": "grid", "max_trials": 3, "space": {"model": {"grid": ["lenet", "cnn"]}}},
     "max_trials"),
    ({"strategy": "asha", "asha": {"min_epochs": 1, "reduction_factor": 3, "max_epochs": 9},
      "space": {"hyperparameters.epochs": {"choice": [1, 2]}}}, "space.hyperparameters.epochs"),
    ({"strategy": "asha"}, "asha"),
    ({"strategy": "asha", "asha": {"min_epochs": 1, "reduction_factor": 3, "max_epochs": 3},
      "base": {**BASE, "hyperparameters": {"world_size": 2, "batch_size": 64}}},
     "base.hyperparameters.world_size"),
    ({"asha": {"min_epochs": 1, "reduction_factor": 3, "max_epochs": 9}}, "asha"),
    ({"metric": "val_accuracy"}, "metric"),
])
def test_a_spec_no_job_could_run_is_refused_naming_its_field(fields, field):
    assert field_of(**fields) == field


def test_a_sampled_trial_is_a_valid_job_spec():
    spec, values = trial_job(check(sweep_spec())[0].stored(), 2)
    assert spec.hyperparameters.lr == values["hyperparameters.lr"]
    assert spec.name == "sweep-lenet-digits-t2" and spec.hyperparameters.epochs == 1


def test_max_concurrent_holds_and_the_sweep_ends_with_its_last_trial(sent):
    settings = get_settings()
    with session_scope() as session:
        sweep_id = create_sweep(session, sweep_spec(max_concurrent=2), LOCAL_ADMIN,
                                settings).id
    made = trials(sweep_id)
    assert [t.trial for t in made] == [0, 1] and job_ids(sent) == [t.id for t in made]
    with session_scope() as session:  # nothing ended: no room for a third
        assert advance(session, sweep_id, settings) == []
    end_trial(made[0].id, JobStatus.succeeded, 0.5)
    end_trial(made[1].id, JobStatus.failed)
    with session_scope() as session:
        assert len(advance(session, sweep_id, settings)) == 2
    made = trials(sweep_id)
    assert [t.trial for t in made] == [0, 1, 2, 3]
    end_trial(made[2].id, JobStatus.succeeded, 0.75)
    end_trial(made[3].id, JobStatus.succeeded, 0.75)
    with session_scope() as session:
        assert advance(session, sweep_id, settings) == []
        sweep = session.get(Sweep, sweep_id)
        assert sweep.status == "succeeded"
        summary = summarize(session, [sweep])[sweep_id]
    assert summary.best["trial"] == 2 and summary.best["value"] == 0.75  # a tie: the lower
    assert summary.trials["succeeded"] == 3 and summary.trials["failed"] == 1
    assert summary.epochs_full == 4


def test_two_schedulers_at_once_make_each_trial_once(sent):
    settings = get_settings()
    with session_scope() as session:
        sweep_id = create_sweep(session, sweep_spec(max_concurrent=1, max_trials=3),
                                LOCAL_ADMIN, settings).id
    end_trial(trials(sweep_id)[0].id, JobStatus.succeeded, 0.5)
    advance_at_once(sweep_id)
    made = trials(sweep_id)
    assert [t.trial for t in made] == [0, 1]
    assert sorted(job_ids(sent)) == sorted(t.id for t in made)  # each sent once


def test_a_trial_over_the_tenants_cap_waits_and_starts_when_room_is_made(sent, monkeypatch):
    user_id = uuid.uuid4().hex
    with session_scope() as session:
        session.add(User(id=user_id, name=f"capped-{user_id[:8]}", is_admin=False))
    tenant = Tenant(user_id=user_id, name="capped", is_admin=False)
    settings = get_settings().model_copy(update={"tenant_max_active_jobs": 1})
    with session_scope() as session:
        sweep = create_sweep(session, sweep_spec(max_concurrent=3), tenant, settings)
    assert [t.trial for t in trials(sweep.id)] == [0]
    assert "trial 1 waits" in sweep.waiting and "TRAINHUB_TENANT_MAX_ACTIVE_JOBS" in sweep.waiting
    end_trial(trials(sweep.id)[0].id, JobStatus.succeeded, 0.5)
    with session_scope() as session:
        advance(session, sweep.id, settings)
        assert session.get(Sweep, sweep.id).waiting is not None  # trial 2 waits now
    assert [t.trial for t in trials(sweep.id)] == [0, 1]


def test_a_cancel_ends_the_sweep_and_its_trials_and_starts_no_more(sent):
    settings = get_settings()
    with session_scope() as session:
        sweep = create_sweep(session, sweep_spec(max_concurrent=2), LOCAL_ADMIN, settings)
        cancelled = cancel_sweep(session, sweep)
        assert cancelled.status == "cancelled"
        assert advance(session, sweep.id, settings) == []
    assert {t.status for t in trials(sweep.id)} == {"cancelled"}
