"""A job's metric points read back a page at a time: by step (GET /jobs/{id}/metrics),
or by row id after a position (the live event stream's history and gaps)."""
from __future__ import annotations

from typing import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.tables import MetricPoint

# A step page's row: plain columns, no ORM object (a page can hold 10,000 points).
PAGE_COLUMNS = (MetricPoint.name, MetricPoint.epoch, MetricPoint.batch, MetricPoint.step,
                MetricPoint.value, MetricPoint.time)
_STEP = 3  # the step's place in a row of PAGE_COLUMNS


def step_page(session: Session, job_id: str, name: str | None, since_step: int | None,
              limit: int) -> tuple[Sequence, int | None]:
    """Up to `limit` rows of PAGE_COLUMNS with step > since_step (of one name, if given), in
    step order, and the next page's since_step (None after the last page). One step's points
    are never split across pages: a page ends before the step that does not fit whole, or
    holds that one step alone when even it is over the limit."""
    query = select(*PAGE_COLUMNS).where(MetricPoint.job_id == job_id)
    if name is not None:
        query = query.where(MetricPoint.name == name)
    if since_step is not None:
        query = query.where(MetricPoint.step > since_step)
    # One name: (job_id, name, step) is unique, so step alone is a total order, and the
    # unique index reads the page in it; all names: the (job_id, step, id) index does.
    # Either way the page reads its own rows and sorts none, however long the job.
    order = (MetricPoint.step,) if name is not None else (MetricPoint.step, MetricPoint.id)
    rows = session.execute(query.order_by(*order).limit(limit + 1)).all()
    next_since_step = None
    if len(rows) > limit:
        cut_step = rows[limit][_STEP]
        rows = [r for r in rows[:limit] if r[_STEP] != cut_step] or session.execute(
            query.where(MetricPoint.step == cut_step).order_by(MetricPoint.id)).all()
        next_since_step = rows[-1][_STEP]
    return rows, next_since_step


def points_after(session: Session, job_id: str, after: int, up_to: int | None,
                 limit: int) -> Sequence[MetricPoint]:
    """Up to `limit` of the job's points with row id > after (and <= up_to), in id order."""
    query = select(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.id > after)
    if up_to is not None:
        query = query.where(MetricPoint.id <= up_to)
    return session.scalars(query.order_by(MetricPoint.id).limit(limit)).all()
