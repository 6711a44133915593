"""core.metrics.store's batch writer: the COPY text rows (escaping, NaN, numpy scalars) and the
SQLite path (embedded mode), where the plain INSERT stores each (job, name, step) once."""
from __future__ import annotations

import numpy as np
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from core import jobs
from core.jobspec import JobSpec
from core.metrics.store import copy_text, insert_points
from core.tables import Base, MetricPoint
from worker.reporting import Metric


def test_copy_text_escapes_names_and_writes_diverged_values():
    text = copy_text([Metric("loss", 1, 2, 3, 0.5), Metric("a\tb\\c\nd", 1, 2, 4, float("nan")),
                      Metric("loss", 1, 2, 5, float("inf")), Metric("loss", 1, 2, 6,
                                                                   np.float64(0.25))])
    assert text.splitlines() == ["0\tloss\t1\t2\t3\t0.5", "1\ta\\tb\\\\c\\nd\t1\t2\t4\tNaN",
                                 "2\tloss\t1\t2\t5\tInfinity", "3\tloss\t1\t2\t6\t0.25"]


def test_sqlite_stores_each_point_once_and_keeps_the_first(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'embedded.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        job_id = jobs.create_job(session, JobSpec(model="mlp", dataset="digits").resolved()).id
        session.commit()
    with Session(engine) as session:
        ids = insert_points(session, job_id, [Metric("loss", 1, 1, 1, 2.0),
                                              Metric("loss", 1, 2, 2, 1.5),
                                              Metric("loss", 1, 1, 1, 9.0)]).ids
        session.commit()
    assert set(ids) == {("loss", 1), ("loss", 2)} and ids[("loss", 1)] < ids[("loss", 2)]
    with Session(engine) as session:
        again = insert_points(session, job_id, [Metric("loss", 1, 2, 2, 7.0),
                                                Metric("acc", 1, 2, 2, 0.5)]).ids
        session.commit()
        rows = session.execute(select(MetricPoint.name, MetricPoint.step, MetricPoint.value)
                               .order_by(MetricPoint.id)).all()
    assert list(again) == [("acc", 2)]
    assert [(n, s) for n, s, _ in rows] == [("loss", 1), ("loss", 2), ("acc", 2)]
    assert rows[0][2] == 2.0 and rows[1][2] == 1.5 and rows[2][2] == 0.5
