"""core.sweeps' asha on the real Postgres, its trials played by the test (claimed, then
paused at their rung or ended, with a metric the test chooses): the promotions ASHA's rule
makes, step by step; the trials it never promoted end `stopped`; a step taken twice, or by
four schedulers at once, decides once. (tests/e2e/test_asha.py trains real trials.)"""
from __future__ import annotations

import pytest
from sqlalchemy import select

from core import jobs
from core.config import get_settings
from core.db import session_scope, upgrade_schema
from core.states import JobStatus, SweepStatus
from core.sweeps.asha import rung_epochs
from core.sweeps.lifecycle import create_sweep
from core.sweeps.spec import SweepSpec
from core.sweeps.summary import summarize
from core.sweeps.trials import advance, advance_running, finish
from core.tables import Job, Sweep, SweepRung
from core.tenancy import LOCAL_ADMIN
from tests.integration.core.conftest import advance_at_once

# Trial n's eval_accuracy at rung 0; each later epoch adds 0.01.
SCORES = [0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4]


pytestmark = pytest.mark.usefixtures("sweeps_cancelled_after")


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()


def asha_sweep(max_concurrent: int = 1) -> str:
    spec = SweepSpec.model_validate({
        "base": {"model": "lenet", "dataset": "digits",
                 "hyperparameters": {"batch_size": 64}},
        "space": {"hyperparameters.lr": {"loguniform": [1e-3, 0.3]}}, "strategy": "asha",
        "max_trials": 9, "max_concurrent": max_concurrent,
        "asha": {"min_epochs": 1, "reduction_factor": 3, "max_epochs": 9}})
    with session_scope() as session:
        return create_sweep(session, spec, LOCAL_ADMIN, get_settings()).id


def play_queued(sweep_id: str) -> list[tuple[int, int | None]]:
    """Each queued trial runs to its pause epoch (or its end): (trial, the epoch it stopped
    at, None for the end)."""
    played = []
    with session_scope() as session:
        queued = session.scalars(select(Job).where(
            Job.sweep_id == sweep_id, Job.status == "queued").order_by(Job.trial)).all()
        for job in queued:
            attempt = jobs.claim(session, job.id, "w", "cpu", 60).attempts
            epoch = job.pause_at_epoch or 9
            metrics = {"eval_accuracy": SCORES[job.trial] + 0.01 * (epoch - 1)}
            if job.pause_at_epoch:
                jobs.pause(session, job.id, attempt, metrics)
            else:
                jobs.transition(session, job.id, JobStatus.succeeded, attempt=attempt,
                                final_metrics=metrics)
            session.commit()
            played.append((job.trial, job.pause_at_epoch))
    return played


def test_rungs_run_from_min_epochs_by_eta_to_max_epochs():
    assert rung_epochs({"min_epochs": 1, "reduction_factor": 3, "max_epochs": 9}) == [1, 3, 9]
    assert rung_epochs({"min_epochs": 2, "reduction_factor": 3, "max_epochs": 9}) == [2, 6, 9]
    assert rung_epochs({"min_epochs": 4, "reduction_factor": 2, "max_epochs": 4}) == [4]


def test_one_at_a_time_asha_promotes_by_its_rule_and_stops_the_rest(sent):
    settings = get_settings()
    sweep_id = asha_sweep()
    history = []
    while True:
        played = play_queued(sweep_id)
        if not played:
            break
        history += played
        with session_scope() as session:
            advance(session, sweep_id, settings)
            assert advance(session, sweep_id, settings) == []  # a second step: nothing new
    # New trials at rung 0 until a rung's top 1/3 has one not yet promoted (see SCORES).
    assert history == [(0, 1), (1, 1), (2, 1), (1, 3), (3, 1), (4, 1), (5, 1), (5, 3),
                       (6, 1), (7, 1), (8, 1), (3, 3), (1, None)]
    with session_scope() as session:
        sweep = session.get(Sweep, sweep_id)
        assert sweep.status == "succeeded"
        statuses = {trial: status for trial, status in session.execute(
            select(Job.trial, Job.status).where(Job.sweep_id == sweep_id))}
        summary = summarize(session, [sweep])[sweep_id]
    assert statuses == {1: "succeeded", **{t: "stopped" for t in (0, 2, 3, 4, 5, 6, 7, 8)}}
    assert summary.best["trial"] == 1 and summary.best["value"] == pytest.approx(0.98)
    rungs = summary.rungs
    assert [r["reached"] for r in rungs] == [9, 3, 1]
    assert [t["trial"] for t in rungs[0]["trials"] if t["promoted"]] == [1, 5, 3]
    assert rungs[0]["cutoff"] == 0.7 and rungs[1]["cutoff"] == pytest.approx(0.92)
    assert [t["trial"] for t in rungs[1]["trials"]] == [1, 5, 3]
    assert summary.trials["stopped"] == 8 and summary.epochs_full == 81


def test_four_schedulers_at_once_promote_once(sent):
    settings = get_settings()
    sweep_id = asha_sweep()
    for _ in range(2):  # trials 0 and 1 paused at rung 0, trial 2 made
        play_queued(sweep_id)
        with session_scope() as session:
            advance(session, sweep_id, settings)
    play_queued(sweep_id)  # trial 2 paused: trial 1 is now due for promotion
    advance_at_once(sweep_id)
    with session_scope() as session:
        promoted = session.scalars(select(SweepRung.trial).where(
            SweepRung.sweep_id == sweep_id, SweepRung.promoted_at.is_not(None))).all()
        queued = session.scalars(select(Job.trial).where(
            Job.sweep_id == sweep_id, Job.status == "queued")).all()
    assert promoted == [1] and queued == [1]


def test_the_reaper_cancels_what_a_crashed_cancel_left(sent):
    """A process that ends the sweep and dies before cancelling its trials (cancel_sweep's
    two commits): the reaper's pass cancels the paused and queued trials it left."""
    settings = get_settings()
    sweep_id = asha_sweep(max_concurrent=2)
    play_queued(sweep_id)  # trials 0 and 1 paused at rung 0
    with session_scope() as session:
        advance(session, sweep_id, settings)  # trials 2 and 3 queued
        assert finish(session, sweep_id, SweepStatus.cancelled)  # ...and the process dies
    with session_scope() as session:
        advance_running(session, settings)
        statuses = dict(session.execute(
            select(Job.trial, Job.status).where(Job.sweep_id == sweep_id)).all())
    assert statuses == {0: "cancelled", 1: "cancelled", 2: "cancelled", 3: "cancelled"}
