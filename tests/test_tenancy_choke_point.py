"""Owned rows reach a route only through core.tenancy: no module of the API (nor a service a
route is an adapter over) loads a job, a dataset or a program by id itself (`session.get(Job, ...)`),
or lists them without `visible(...)`.
Checked on the source, so a new route cannot forget it. A control proves the check bites."""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OWNED = {"Job", "Dataset", "Program"}
# Reviewed exceptions, each with why it is not a way around the check.
ALLOWED = {
    ("api/live.py", "loads a Job"): "re-reads the status of the job the events route already "
                                    "loaded for the caller with load_job",
    ("core/dataset_uploads.py", "loads a Dataset"): "discard: cleans up the row this same "
                                                    "request created",
    ("core/job_submission.py", "selects Job"): "by_key: an Idempotency-Key matches only "
                                               "the caller's own jobs (owner ==), not all "
                                               "it may see",
}
# The services the routes are adapters over: what a route did itself before, checked alike.
ROUTE_SERVICES = ("core/job_submission.py", "core/job_deletion.py", "core/dataset_uploads.py",
                  "core/programs.py")


def violations(source: str, path: str) -> list[str]:
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Name) and first.id in OWNED):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "get" and isinstance(func, ast.Attribute):
            found.append(f"{path}:{node.lineno}: loads a {first.id} by id without get_owned")
        elif name == "select":
            parent = parents.get(node)
            # select(Job) is fine only as visible(select(Job), Job, tenant)'s first argument
            # (possibly after .where/.order_by chained on the visible(...) result).
            if not (isinstance(parent, ast.Call) and getattr(parent.func, "id", "") == "visible"):
                found.append(f"{path}:{node.lineno}: selects {first.id} rows without visible()")
    return found


def test_no_api_module_loads_or_lists_owned_rows_around_the_choke_point():
    found, excused = [], set()
    for path in sorted((REPO / "api").rglob("*.py")) + [REPO / p for p in ROUTE_SERVICES]:
        relpath = str(path.relative_to(REPO))
        for problem in violations(path.read_text(encoding="utf-8"), relpath):
            kind = next((k for p, k in ALLOWED if p == relpath and k in problem), None)
            if kind is None:
                found.append(problem)
            else:
                excused.add((relpath, kind))
    assert not found, "\n".join(found)
    assert excused == set(ALLOWED), f"stale exceptions: {set(ALLOWED) - excused}"


def test_the_check_finds_a_route_that_forgets():
    forgetful = textwrap.dedent("""
        def read(job_id, session):
            return session.get(Job, job_id)

        def everything(session):
            return session.scalars(select(Dataset)).all()

        def fine(session, tenant):
            return session.scalars(visible(select(Job), Job, tenant).limit(5)).all()
    """)
    found = violations(forgetful, "api/routes/forgetful.py")
    assert len(found) == 2, found
    assert "loads a Job" in found[0] and "selects Dataset" in found[1]


def test_every_route_but_the_public_ones_answers_401_without_credentials(monkeypatch):
    """Every route the app has, those left out of the OpenAPI document included."""
    from fastapi.routing import APIRoute, iter_route_contexts
    from fastapi.testclient import TestClient

    from api.auth import PUBLIC_ROUTES
    from api.main import app
    from core.config import get_settings

    monkeypatch.setenv("TRAINHUB_AUTH", "on")
    get_settings.cache_clear()
    try:
        client = TestClient(app)
        checked = 0
        for context in iter_route_contexts(app.routes):
            if not isinstance(context.route, APIRoute):
                continue  # /static (files of the page's shell) and the API's own docs
            path = context.path.replace("{job_id}", "0" * 32).replace(
                "{dataset_id}", "0" * 32).replace("{model_id}", "0" * 32).replace("{ref}", "best")
            for method in context.methods:
                resp = client.request(method, path)
                if (method, context.path) in PUBLIC_ROUTES:
                    assert resp.status_code != 401 or context.path == "/session"
                else:
                    assert resp.status_code == 401, (method, context.path, resp.status_code)
                    checked += 1
        assert checked >= 15
        assert client.get("/").status_code == 200  # the page's shell
        assert client.get("/static/app.js").status_code == 200
    finally:
        get_settings.cache_clear()
