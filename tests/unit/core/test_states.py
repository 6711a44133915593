"""The state machines: a job's, queued -> running -> succeeded | failed | cancelled (and an
asha trial's running -> paused -> queued | stopped | cancelled); an uploaded dataset's,
processing -> ready | failed."""
from __future__ import annotations

import itertools

import pytest

from core.states import (
    ALLOWED,
    DATASET_ALLOWED,
    DATASET_TERMINAL,
    TERMINAL,
    DatasetStatus,
    InvalidTransition,
    JobStatus,
    check_transition,
)

S = JobStatus
EDGES = {
    (S.queued, S.running), (S.queued, S.failed), (S.queued, S.cancelled),
    (S.running, S.succeeded), (S.running, S.failed), (S.running, S.cancelled),
    (S.running, S.queued),  # a graceful stop hands the job back; the reaper requeues it
    # An asha trial pauses at a rung; promoted it is queued again, else stopped.
    (S.running, S.paused), (S.paused, S.queued), (S.paused, S.stopped),
    (S.paused, S.cancelled),
}
ALL_PAIRS = list(itertools.product(JobStatus, JobStatus))


@pytest.mark.parametrize("current, target", sorted(EDGES), ids=lambda s: s.value)
def test_allowed_edges_pass(current, target):
    assert check_transition(current, target) is None


@pytest.mark.parametrize("current, target",
                         [pair for pair in ALL_PAIRS if pair not in EDGES],
                         ids=lambda s: s.value)
def test_every_other_transition_is_invalid(current, target):
    with pytest.raises(InvalidTransition) as excinfo:
        check_transition(current, target)
    assert excinfo.value.current is current and excinfo.value.target is target
    where = f"already ended ({current.value})" if current in TERMINAL else f"is {current.value}"
    assert str(excinfo.value).startswith(f"the job {where}; only a ")
    assert "cannot become" not in str(excinfo.value)


@pytest.mark.parametrize("terminal", sorted(TERMINAL), ids=lambda s: s.value)
def test_leaving_a_terminal_state_raises(terminal):
    for target in JobStatus:
        with pytest.raises(InvalidTransition):
            check_transition(terminal, target)


def test_queued_cannot_jump_to_succeeded():
    with pytest.raises(InvalidTransition,
                       match="^the job is queued; only a running job can succeed$"):
        check_transition(S.queued, S.succeeded)


def test_cancelling_an_ended_job_names_it_and_what_can_be_cancelled():
    job_id = "3f2c" + "0" * 28
    with pytest.raises(InvalidTransition) as excinfo:
        check_transition(S.cancelled, S.cancelled, job_id)
    assert str(excinfo.value) == (f"job {job_id} already ended (cancelled); only a queued, "
                                  "running or paused job can be cancelled")
    assert excinfo.value.job_id == job_id


def test_no_self_loops_and_the_table_matches():
    for status in JobStatus:
        with pytest.raises(InvalidTransition):
            check_transition(status, status)
    assert {(a, b) for a, targets in ALLOWED.items() for b in targets} == EDGES


def test_string_values_compare_as_statuses():
    # the DB stores plain strings; JobStatus is a str enum so both sides compare
    check_transition(JobStatus("queued"), JobStatus("running"))
    assert S.running == "running"


# ---- an uploaded dataset's ----------------------------------------------------------------

D = DatasetStatus
DATASET_EDGES = {(D.processing, D.ready), (D.processing, D.failed)}


def test_a_processing_upload_becomes_ready_or_fails_and_nothing_else_moves():
    assert {(a, b) for a, targets in DATASET_ALLOWED.items() for b in targets} == DATASET_EDGES
    for current, target in itertools.product(DatasetStatus, DatasetStatus):
        if (current, target) in DATASET_EDGES:
            check_transition(current, target)
        else:
            with pytest.raises(InvalidTransition):
                check_transition(current, target)


def test_ready_and_failed_are_the_terminal_dataset_states():
    assert DATASET_TERMINAL == {D.ready, D.failed}
    assert [s for s in DatasetStatus if s.is_terminal] == [D.ready, D.failed]


def test_a_refused_dataset_move_names_the_dataset_and_what_could():
    dataset_id = "9a1b" + "0" * 28
    with pytest.raises(InvalidTransition) as excinfo:
        check_transition(D.ready, D.failed, dataset_id)
    assert str(excinfo.value) == (f"dataset {dataset_id} already ended (ready); only a "
                                  "processing dataset can fail")
    assert excinfo.value.current is D.ready and excinfo.value.target is D.failed
    with pytest.raises(InvalidTransition, match="^the dataset is processing; no dataset can "
                                                "become processing$"):
        check_transition(D.processing, D.processing)
