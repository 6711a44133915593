"""core.metrics.pages on the real Postgres: step pages never split a step (a step over the
limit comes alone, whole), name and since_step filter, and the live stream's points by id."""
from __future__ import annotations

import pytest

from core import jobs
from core.db import session_scope, upgrade_schema
from core.jobspec import JobSpec
from core.metrics import store as metric_store
from core.metrics.pages import points_after, step_page


@pytest.fixture(scope="module")
def job_id() -> str:
    """One job for every test here (they only read): loss and lr at steps 1 to 4 (lr's
    value: the step)."""
    upgrade_schema()
    with session_scope() as session:
        job_id = jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved()).id
        metric_store.insert_metrics(session, job_id, [
            {"name": name, "epoch": 1, "batch": step, "step": step,
             "value": float(step) if name == "lr" else 1.0 / step}
            for step in range(1, 5) for name in ("loss", "lr")])
    return job_id


def pages(job_id: str, name: str | None, limit: int) -> list[list[tuple[str, int]]]:
    out, since = [], None
    while True:
        with session_scope() as session:
            rows, since = step_page(session, job_id, name, since, limit)
        out.append([(r[0], r[3]) for r in rows])
        if since is None:
            return out


def test_a_page_ends_before_a_step_that_does_not_fit_whole(job_id):
    assert pages(job_id, None, 3) == [[("loss", 1), ("lr", 1)], [("loss", 2), ("lr", 2)],
                                      [("loss", 3), ("lr", 3)], [("loss", 4), ("lr", 4)]]
    assert pages(job_id, None, 5) == [[("loss", 1), ("lr", 1), ("loss", 2), ("lr", 2)],
                                      [("loss", 3), ("lr", 3), ("loss", 4), ("lr", 4)]]


def test_a_step_over_the_limit_comes_alone_and_whole(job_id):
    # The last step came whole on a page of its own: the page after it is empty.
    assert pages(job_id, None, 1) == [[("loss", s), ("lr", s)] for s in range(1, 5)] + [[]]


def test_name_and_since_step_filter_and_the_columns_are_the_page_s(job_id):
    assert pages(job_id, "lr", 10) == [[("lr", s) for s in range(1, 5)]]
    with session_scope() as session:
        rows, since = step_page(session, job_id, "lr", 2, 10)
    assert since is None and [tuple(r[:5]) for r in rows] == [("lr", 1, 3, 3, 3.0),
                                                              ("lr", 1, 4, 4, 4.0)]


def test_points_after_an_id_in_id_order_up_to_a_bound(job_id):
    with session_scope() as session:
        every = points_after(session, job_id, 0, None, 100)
        ids = [p.id for p in every]
        assert ids == sorted(ids) and len(ids) == 8
        assert [p.id for p in points_after(session, job_id, ids[2], ids[5], 100)] == ids[3:6]
        assert [p.id for p in points_after(session, job_id, ids[2], None, 2)] == ids[3:5]
