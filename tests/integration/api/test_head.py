"""HEAD on every GET route, over real HTTP (an API process): the status, content type and
length a GET gets, and no body. The routes come from the app itself (its GET routes, and
every file under its mounts), so a route added later is covered the day it is added; a new
path parameter needs a value from the resources fixture."""
from __future__ import annotations

import re

import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from api.main import app
from api.routes.pages import PageFiles
from core import jobs
from core.artifacts import checkpoint_key, get_store
from core.db import session_scope
from core.ids import new_id
from core.jobspec import JobSpec
from core.sweeps.spec import SweepSpec, check
from core.tables import Checkpoint, Dataset, Program, Sweep
from tests.unit.api.test_predictor import checkpoint_blobs  # noqa: F401 - a fixture

# Answers whose body changes from one request to the next, so their length does too:
# Prometheus series count the requests themselves.
CHANGING_LENGTH = {"/metrics"}


@pytest.fixture(scope="module")
def resources(live_api, checkpoint_blobs) -> dict[str, str]:  # noqa: F811 - a fixture
    """A value for each path parameter: a queued job with one real checkpoint (its export
    is a GET too), an upload, a program (in the schema the API brought up to date as it
    started)."""
    with session_scope() as session:
        job_id = jobs.create_job(session, JobSpec(model="lenet", dataset="digits").resolved()).id
        dataset_id, model_id = new_id(), new_id()
        session.add(Dataset(id=dataset_id, name="head.npz", status="processing", options={}))
        session.add(Program(id=model_id, name="head", train_key="programs/x/train.pt2",
                            sha256="0" * 64, size_bytes=0, input_shape=[1, 8, 8],
                            num_classes=10, parameter_count=1, ops=[]))
    sweep_id = new_id()  # ended, with no trial: its event stream ends at once
    stored = check(SweepSpec.model_validate({
        "name": "head", "base": {"model": "lenet", "dataset": "digits"}, "strategy": "grid",
        "space": {"hyperparameters.lr": {"grid": [0.1]}}}))[0].stored()
    with session_scope() as session:
        session.add(Sweep(id=sweep_id, name="head", status="succeeded", strategy="grid",
                          metric="eval_accuracy", mode="max", max_trials=1, max_concurrent=1,
                          seed=0, spec=stored))
    key = checkpoint_key(job_id, 1)
    size, sha = get_store().save(key, lambda f: f.write(checkpoint_blobs[1][0]))
    with session_scope() as session:
        session.add(Checkpoint(job_id=job_id, epoch=1, step=3, storage_key=key,
                               size_bytes=size, sha256=sha, metrics={}))
    yield {"job_id": job_id, "ref": "1", "dataset_id": dataset_id, "model_id": model_id,
           "sweep_id": sweep_id,
           "checkpoint_size": str(len(checkpoint_blobs[1][0]))}
    with session_scope() as session:  # GET /models of a later module lists no stray program
        session.delete(session.get(Program, model_id))


def get_paths(values: dict[str, str]) -> list[str]:
    """Every path a GET answers in the app: its GET routes (in the OpenAPI document or not),
    filled in from values, and each file under its mounts."""
    paths = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            assert isinstance(route.app, PageFiles), f"say how to list the files of {route.path}"
            directory = route.app.files.directory
            paths += [f"{context.path}/{f.relative_to(directory).as_posix()}"
                      for f in sorted(directory.rglob("*"))
                      if f.is_file() and "__pycache__" not in f.parts]
        elif "GET" in (context.methods or ()):
            names = re.findall(r"{(\w+)(?::\w+)?}", context.path)
            missing = [n for n in names if n not in values]
            assert not missing, f"{context.path}: give {missing} a value in resources()"
            paths.append(re.sub(r"{(\w+)(?::\w+)?}", lambda m: values[m[1]], context.path))
    return paths


def test_head_answers_every_get_route_as_get_does_without_a_body(live_api, resources):
    paths = get_paths(resources)
    # The routes this was written against are all there (the enumeration finds them).
    for expected in ("/health", "/", "/docs", "/redoc", "/openapi.json", "/jobs/{job_id}",
                     "/jobs/{job_id}/events", "/jobs/{job_id}/checkpoints/{ref}",
                     "/static/app.js", "/docs/assets/swagger-ui-bundle.js"):
        assert expected.format(**resources) in paths, expected
    compared = []
    for path in paths:
        # A stream: the GET's headers only (a queued job's events never end).
        with live_api.stream("GET", path) as got:
            status, headers = got.status_code, got.headers
        head = live_api.head(path)
        assert head.status_code == status, (path, head.status_code, status, head.text)
        assert head.headers.get("content-type") == headers.get("content-type"), path
        if "content-length" in headers:
            assert "content-length" in head.headers, path
            if path not in CHANGING_LENGTH:
                assert head.headers["content-length"] == headers["content-length"], path
        assert head.content == b"", path
        compared.append((path, status))
    # Real answers, not a wall of 404s: the job, its checkpoint file and the upload are found.
    assert all(status == 200 for _path, status in compared), [c for c in compared if c[1] != 200]


def test_head_of_a_stream_returns_at_once_and_the_connection_stays_usable(live_api, resources):
    events = f"/jobs/{resources['job_id']}/events"
    head = live_api.head(events, timeout=5)  # the job is queued: its stream would run on
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/event-stream")
    assert live_api.get("/health").status_code == 200  # the same keep-alive connection


def test_checkpoint_head_gives_the_file_size_and_sha256(live_api, resources):
    head = live_api.head(f"/jobs/{resources['job_id']}/checkpoints/latest")
    assert head.status_code == 200
    assert head.headers["content-length"] == resources["checkpoint_size"]
    assert head.headers["x-checkpoint-epoch"] == "1"
    assert len(head.headers["x-checkpoint-sha256"]) == 64


def test_head_where_no_get_is_a_405_with_the_allowed_methods(live_api):
    resp = live_api.head("/predict")
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"


def test_head_of_a_missing_job_is_the_gets_404(live_api):
    resp = live_api.head(f"/jobs/{'0' * 32}")
    assert resp.status_code == 404 and resp.headers["content-type"] == "application/json"
