"""A job's metric points into the database, each (job, name, step) once: the first one
written stays, and a point written again (a resumed run replays some) is left out.

Two ways in, one rule: insert_metrics, one plain multi-row INSERT ... ON CONFLICT DO
NOTHING (SQLite in embedded mode, and callers with a few points); insert_points, the
worker's batches, by COPY on Postgres."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Callable, Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.tables import MetricPoint, utcnow

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (name, step): what makes a job's point unique


@dataclass
class Inserted:
    ids: dict[Key, int]  # (name, step) -> row id of the points stored now
    replayed: list  # points not stored: one with that (name, step) was already there


def replayed(points: Sequence, ids: dict[Key, int],
             key: Callable = attrgetter("name", "step")) -> list:
    """Points not stored now: their (name, step) was stored before, or came earlier in
    this batch (the first one of a batch is the one stored)."""
    seen: set[Key] = set()
    out = []
    for p in points:
        k = key(p)
        if k not in ids or k in seen:
            out.append(p)
        seen.add(k)
    return out


def insert_metrics(session: Session, job_id: str, points: Sequence[dict]) -> Inserted:
    """One INSERT for many points (dicts of name, epoch, batch, step, value)."""
    if not points:
        return Inserted({}, [])
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    rows = [{"job_id": job_id, "time": now, **p} for p in points]
    inserted = session.execute(
        insert(MetricPoint).values(rows)
        .on_conflict_do_nothing(index_elements=["job_id", "name", "step"])
        .returning(MetricPoint.id, MetricPoint.name, MetricPoint.step)).all()
    ids = {(r.name, r.step): r.id for r in inserted}
    return Inserted(ids, replayed(points, ids, itemgetter("name", "step")))


# ---- the worker's batches: COPY, then INSERT ... SELECT ----------------------------------

STAGE = "trainhub_metric_stage"
_CREATE_STAGE = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} (seq integer, name text, "
                 "epoch integer, batch integer, step integer, value double precision) "
                 "ON COMMIT DELETE ROWS")
_COPY = f"COPY {STAGE} (seq, name, epoch, batch, step, value) FROM STDIN"
_MOVE = ("INSERT INTO metric_points (job_id, name, epoch, batch, step, value, time) "
         f"SELECT %s, name, epoch, batch, step, value, %s FROM {STAGE} ORDER BY seq "
         "ON CONFLICT (job_id, name, step) DO NOTHING RETURNING id, name, step")

_SQLITE_ROWS = 1000  # points per INSERT statement in embedded mode
_escaped: dict[str, str] = {}


def _escape(name: str) -> str:
    """A name as COPY's text format wants it (few distinct names: cached)."""
    out = _escaped.get(name)
    if out is None:
        out = (name.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
               .replace("\r", "\\r"))
        if len(_escaped) < 10_000:
            _escaped[name] = out
    return out


def _value(v) -> str:
    if v is None:
        return "\\N"
    v = float(v)  # a numpy scalar's repr is not a number
    return repr(v) if math.isfinite(v) else ("NaN" if math.isnan(v)
                                             else ("Infinity" if v > 0 else "-Infinity"))


def copy_text(points: Sequence) -> str:
    """The COPY text-format rows of Metric-like points (name, epoch, batch, step, value)."""
    esc, val = _escape, _value
    return "".join([f"{i}\t{esc(p.name)}\t{int(p.epoch)}\t{int(p.batch)}\t{int(p.step)}\t"
                    f"{val(p.value)}\n" for i, p in enumerate(points)])


def insert_points(session, job_id: str, points: Sequence) -> Inserted:
    """Store Metric-like points in the session's transaction; the ids of those stored now
    follow the order handed over, and the replayed ones are listed.

    Postgres: COPY (text format) into a per-connection temporary table emptied at commit,
    then one INSERT ... SELECT ... ORDER BY seq ON CONFLICT DO NOTHING RETURNING moves it
    into metric_points (COPY itself cannot skip conflicts). SQLite (embedded mode): the
    plain multi-row INSERT of insert_metrics, in chunks."""
    if not points:
        return Inserted({}, [])
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        rows = [{"name": p.name, "epoch": p.epoch, "batch": p.batch, "step": p.step,
                 "value": p.value} for p in points]
        ids: dict[Key, int] = {}
        for i in range(0, len(rows), _SQLITE_ROWS):  # SQLite caps a statement's variables
            ids.update(insert_metrics(session, job_id, rows[i:i + _SQLITE_ROWS]).ids)
    else:
        raw = connection.connection.driver_connection  # psycopg 3, in the transaction
        with raw.cursor() as cur:
            cur.execute(_CREATE_STAGE)
            with cur.copy(_COPY) as copy:
                copy.write(copy_text(points))
            cur.execute(_MOVE, (job_id, utcnow()))
            ids = {(name, step): point_id for point_id, name, step in cur.fetchall()}
    return Inserted(ids, replayed(points, ids) if len(ids) < len(points) else [])


# ---- what is stored already --------------------------------------------------------------

def last_point_id(session: Session, job_id: str) -> int:
    """The row id of the job's newest point (0 for none): where its live events stand."""
    return session.scalar(select(func.max(MetricPoint.id)).where(
        MetricPoint.job_id == job_id)) or 0


def stored_values(session: Session, job_id: str, keys: Sequence[Key]) -> dict:
    """{(name, step): value} of stored points, for comparing replayed ones."""
    if not keys:
        return {}
    rows = session.execute(select(MetricPoint.name, MetricPoint.step, MetricPoint.value).where(
        MetricPoint.job_id == job_id, MetricPoint.step.in_({s for _, s in keys}),
        MetricPoint.name.in_({n for n, _ in keys}))).all()
    return {(r.name, r.step): r.value for r in rows}


def warn_of_changed_replays(session: Session, job_id: str, points: Sequence) -> None:
    """A resumed run writes some points again; the stored one stays. Say so when the
    values differ (a run that is not bitwise reproducible, e.g. on a GPU)."""
    stored = stored_values(session, job_id, [(p.name, p.step) for p in points])
    for p in points:
        old = stored.get((p.name, p.step))
        same = old == p.value or (old is not None and math.isnan(old)
                                  and math.isnan(p.value))
        if not same:
            log.warning("job %s: replayed point %s at step %d is %r; the stored %r is kept",
                        job_id, p.name, p.step, p.value, old)
