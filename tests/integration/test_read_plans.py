"""Every list and page route reads about its page, whatever the job's or the table's length
(#26): on a database of its own with 100,000 metric points for one job and over 1,000 rows
in each listed table, the SELECTs each route issues (captured on the engine while the app
answers) are run under EXPLAIN ANALYZE: no Seq Scan on a table of over 1,000 rows, no Sort
of more than the page's limit + 1 rows (estimated or actual), no scan that reads more than
READ_FACTOR times that. The statistics come from the worker's own rule
(worker.reaper.refresh_statistics), as after a bulk load in production."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import event, func, insert, select, table, text

from tests.conftest import create_database

N_POINTS = 100_000  # the big job's loss points, one a step
ROWS = 1_500  # of each listed table: over the 1,000 the check is about
OTHER_OWNERS = [f"{i:032x}" for i in range(1, 30)]  # tenants with no key here
STATUSES = ["succeeded"] * 5 + ["failed", "cancelled", "queued", "running"]
# Of the unpaged lists' rows (datasets, programs) every 30th is the tenant's: 50 of 1,500.
UNPAGED_EVERY = 30
SWEEP_TRIALS = 100  # one sweep's, so that its job list has more than a page to sort
# A page may read this many times its rows (a filter's misses), not a number of rows that
# grows with the table.
READ_FACTOR = 10


def owner_of(i: int, tenant_id: str, every: int = 3) -> str:
    """Every third row (or every `every`) the tested tenant's, the others spread over 29
    more."""
    return tenant_id if i % every == 0 else OTHER_OWNERS[i % len(OTHER_OWNERS)]


def load(session, tenant_id: str) -> dict:
    """The rows the routes list; returns the ids the tests ask for."""
    from core.ids import new_id
    from core.jobspec import JobSpec
    from core.sweeps.spec import SweepSpec, check
    from core.tables import Dataset, Job, JobLog, Program, Sweep, utcnow

    start = utcnow() - timedelta(days=30)
    job_spec = JobSpec(model="mlp", dataset="digits").resolved()
    checked, _ = check(SweepSpec.model_validate({
        "base": {"model": "mlp", "dataset": "digits"}, "strategy": "random", "max_trials": 4,
        "space": {"hyperparameters.lr": {"loguniform": [1e-3, 0.3]}}}))
    sweep_spec = checked.stored()
    sweeps = [dict(id=new_id(), owner=owner_of(i, tenant_id), name=f"s{i}",
                   status=("running", "succeeded", "cancelled")[i % 3], strategy="random",
                   metric=sweep_spec["metric"], mode=checked.mode, max_trials=4, max_concurrent=1,
                   seed=i, spec=sweep_spec, created_at=start + timedelta(seconds=i))
              for i in range(ROWS)]
    big_sweep = sweeps[-3]["id"]  # the tenant's (i % 3 == 0)
    jobs = [dict(id=new_id(), owner=owner_of(i, tenant_id), name=f"j{i}",
                 status=STATUSES[i % len(STATUSES)], model="mlp", dataset="digits",
                 spec=job_spec, created_at=start + timedelta(seconds=i), epoch=0, step=0,
                 attempts=1, max_attempts=3, cancel_requested=False)
            for i in range(2 * ROWS)]
    for n, job in enumerate(jobs[-SWEEP_TRIALS:]):
        job.update(owner=tenant_id, sweep_id=big_sweep, trial=n)
    big_job = jobs[0]["id"]  # the tenant's
    datasets = [dict(id=new_id(), owner=owner_of(i, tenant_id, UNPAGED_EVERY), name=f"d{i}", status="ready",
                     options={}, created_at=start + timedelta(seconds=i)) for i in range(ROWS)]
    programs = [dict(id=new_id(), owner=owner_of(i, tenant_id, UNPAGED_EVERY), name=f"p{i}", train_key="k",
                     sha256="0" * 64, size_bytes=1, input_shape=[1, 8, 8], num_classes=10,
                     parameter_count=1, ops=[], created_at=start + timedelta(seconds=i))
                for i in range(ROWS)]
    logs = [dict(job_id=jobs[i % 10]["id"], level="INFO", attempt=1, source="test",
                 message=f"line {i}") for i in range(10 * ROWS)]
    for model, rows in ((Sweep, sweeps), (Job, jobs), (Dataset, datasets),
                        (Program, programs), (JobLog, logs)):
        session.execute(insert(model), rows)
    session.commit()
    raw = session.connection().connection.driver_connection
    with raw.cursor() as cur, cur.copy(
            "COPY metric_points (job_id, name, epoch, batch, step, value, time) "
            "FROM STDIN") as copy:
        now = utcnow().isoformat()
        copy.write("".join(f"{big_job}\tloss\t{s // 1000}\t{s % 1000}\t{s}\t{1 / s}\t{now}\n"
                           for s in range(1, N_POINTS + 1)))
        # Other jobs' points, so that the big job is not the whole table.
        copy.write("".join(f"{job['id']}\t{name}\t1\t{s}\t{s}\t0.5\t{now}\n"
                           for job in jobs[1:21] for s in range(1, 501)
                           for name in ("loss", "lr")))
    # Flushed to the statistics counters when this commit returns, not up to a second later:
    # the reaper's rule reads them next.
    session.execute(text("SELECT pg_stat_force_next_flush()"))
    session.commit()
    return {"big_job": big_job, "big_sweep": big_sweep, "logs_job": jobs[0]["id"],
            "middle_job": jobs[ROWS]}


@pytest.fixture(scope="module")
def app_on_loaded_db():
    """The app on a database of its own with authentication on: (client, keys, ids, table
    sizes, captured statements)."""
    from fastapi.testclient import TestClient

    from api.main import app
    from api.paging import encode_cursor
    from core import auth
    from core.config import get_settings
    from core.db import get_engine, reset_engine, session_scope, upgrade_schema
    from worker.reaper import refresh_statistics

    patch = pytest.MonkeyPatch()
    patch.setenv("TRAINHUB_DATABASE_URL", create_database("trainhub_plans"))
    patch.setenv("TRAINHUB_AUTH", "on")
    get_settings.cache_clear()
    reset_engine()
    try:
        upgrade_schema()
        with session_scope() as session:
            admin, tenant = (auth.create_user(session, "plans_admin", is_admin=True),
                             auth.create_user(session, "plans_tenant"))
            keys = {"admin": auth.create_key(session, admin)[1],
                    "tenant": auth.create_key(session, tenant)[1]}
            session.commit()
            ids = load(session, tenant.id)
        analyzed = refresh_statistics(get_settings())  # the product's rule, not the test's
        assert {"metric_points", "jobs", "job_logs", "datasets", "programs",
                "sweeps"} <= set(analyzed)
        assert refresh_statistics(get_settings()) == []  # current now: not analyzed again
        middle = ids.pop("middle_job")
        ids["middle_cursor"] = encode_cursor(SimpleNamespace(**middle))
        with session_scope() as session:
            sizes = {name: session.scalar(select(func.count()).select_from(table(name)))
                     for name in analyzed}
        captured: list[tuple[str, object]] = []

        def capture(_conn, _cursor, statement, parameters, _context, _many):
            if statement.lstrip().upper().startswith("SELECT"):
                captured.append((statement, parameters))

        engine = get_engine()
        event.listen(engine, "before_cursor_execute", capture)
        yield TestClient(app), keys, ids, sizes, captured
        event.remove(engine, "before_cursor_execute", capture)
    finally:
        patch.undo()
        get_settings.cache_clear()
        reset_engine()


# (what is read, its path from the ids, whose key, the page's limit)
ROUTES = [
    ("metric page of one name", "/jobs/{big_job}/metrics?name=loss&limit=100", "tenant", 100),
    ("metric page of one name, mid-job", "/jobs/{big_job}/metrics?name=loss&limit=100"
                                         "&since_step=50000", "tenant", 100),
    ("metric page of all names", "/jobs/{big_job}/metrics?limit=100", "tenant", 100),
    ("metric page of all names, mid-job", "/jobs/{big_job}/metrics?limit=100"
                                          "&since_step=50000", "tenant", 100),
    *[(f"jobs, {role}{what}", f"/jobs?{query}", role, 50) for role in ("admin", "tenant")
      for what, query in (("", ""), (", next page", "cursor={middle_cursor}"),
                          (", by status", "status=succeeded"),
                          (", a rare status", "status=running"),
                          (", by status, next page", "status=succeeded&cursor={middle_cursor}"))],
    ("a sweep's jobs", "/jobs?sweep={big_sweep}", "tenant", 50),
    ("job logs", "/jobs/{logs_job}/logs?limit=100", "tenant", 100),
    ("job logs, mid-job", "/jobs/{logs_job}/logs?limit=100&since=7000", "tenant", 100),
    ("sweeps, admin", "/sweeps", "admin", 50),
    ("sweeps, tenant", "/sweeps", "tenant", 50),
    ("sweeps, tenant, by status", "/sweeps?status=running", "tenant", 50),
    # GET /datasets and GET /models are not paged: they answer every row the caller may
    # see. An admin's answer is the whole table (read whole, as it must be), so they are
    # checked as the tenant, whose 50 rows of 1,500 must be found through an index.
    ("datasets, tenant", "/datasets", "tenant", ROWS // UNPAGED_EVERY),
    ("uploaded models, tenant", "/models", "tenant", ROWS // UNPAGED_EVERY),
]


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def rows_read(node: dict) -> float:
    """Rows a scan node read: those it passed on and those its filters removed, in all loops
    (EXPLAIN ANALYZE gives both per loop)."""
    return node["Actual Loops"] * (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
                                   + node.get("Rows Removed by Index Recheck", 0))


def findings(plan: dict, sizes: dict, bound: int) -> list[str]:
    """What in an EXPLAIN (ANALYZE) plan reads more than about the page (bound: its limit
    + 1) from a table of over 1,000 rows: a Seq Scan; a Sort of more than bound rows,
    estimated or actual; a scan that reads over READ_FACTOR times bound rows (e.g. from the
    newest row down to a cursor that only a filter applies)."""
    out = []
    for node in nodes(plan):
        kind, relation = node["Node Type"], node.get("Relation Name")
        big = sizes.get(relation, 0) > 1000
        if kind == "Seq Scan" and big:
            out.append(f"Seq Scan on {relation} ({sizes[relation]} rows)")
        if big and rows_read(node) > READ_FACTOR * bound:
            out.append(f"{kind} on {relation} read {rows_read(node):.0f} rows")
        if kind in ("Sort", "Incremental Sort"):
            child = node["Plans"][0]
            if max(child["Plan Rows"], child["Actual Rows"]) > bound:
                out.append(f"{kind} of {child['Plan Rows']} rows estimated, "
                           f"{child['Actual Rows']} actual, on {node.get('Sort Key')}")
    return out


@pytest.mark.parametrize("path, role, limit", [r[1:] for r in ROUTES],
                         ids=[r[0] for r in ROUTES])
def test_the_route_reads_about_its_page(app_on_loaded_db, path, role, limit):
    from core.db import get_engine

    client, keys, ids, sizes, captured = app_on_loaded_db
    captured.clear()
    resp = client.get(path.format(**ids), headers={"Authorization": f"Bearer {keys[role]}"})
    assert resp.status_code == 200, resp.text
    statements = list(captured)
    assert statements, "the route issued no SELECT"
    problems = []
    with get_engine().connect() as conn:
        for statement, parameters in statements:
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement,
                                        parameters).scalar()[0]["Plan"]
            problems += [f"{p}\n  in {' '.join(statement.split())[:300]}"
                         for p in findings(plan, sizes, limit + 1)]
    assert not problems, "\n".join(problems)
