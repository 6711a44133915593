"""Bad input, as a schema fuzzer sends it: text the database cannot store, booleans and
NaN where numbers go, huge ids, unknown routes and methods, oversized bodies; and
Idempotency-Key on POST /jobs. Every answer is a 4xx in the documented shape, never a 5xx,
and nothing is left behind (no row, no file).

Over the wire (a real API process on its own Postgres database and an idle queue, no worker:
jobs stay queued) where the point is what a client sees; in-process (TestClient) where a
failure has to be provoked inside a request."""
from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from api.main import app
from core.builtin_datasets import DATASET_NAMES
from core.ids import ID_REGEX
from models import MODEL_NAMES
from tests.conftest import BROKER_DB, REDIS_BASE, create_database
from tests.procs import env_with, free_port, start_api
from tests.unit.factories import npz_bytes

VALID = {"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}}
MAX_UPLOAD = 100_000  # TRAINHUB_DATASET_MAX_UPLOAD_BYTES of the API under test
HUGE = "f" * 20_000  # an id-like value far too long to echo back


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-input")
    db_url = create_database("trainhub_bad")
    queue = f"idle-{uuid.uuid4().hex[:8]}"
    env = env_with(TRAINHUB_DATABASE_URL=db_url, TRAINHUB_DATA_DIR=str(tmp / "data"),
                   TRAINHUB_QUEUE=queue, TRAINHUB_DATASET_MAX_UPLOAD_BYTES=str(MAX_UPLOAD))
    proc, base = start_api(env, tmp)
    broker = redis.Redis.from_url(f"{REDIS_BASE}/{BROKER_DB}")
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield {"client": client, "base": base, "db_url": db_url, "queue": queue,
                   "broker": broker, "datasets_dir": tmp / "data" / "artifacts" / "datasets"}
    finally:
        proc.stop()
        broker.delete(queue)


@pytest.fixture
def api(stack) -> httpx.Client:
    return stack["client"]


def sql(stack, query: str, *params):
    with psycopg.connect(stack["db_url"]) as conn:
        return conn.execute(query, params).fetchall()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def raw_json(api, body: bytes, **headers) -> httpx.Response:
    # httpx's json= refuses NaN and lone surrogates; Python's json (the server's) reads both.
    return api.post("/jobs", content=body, headers={"content-type": "application/json",
                                                    **headers})


def assert_422(resp: httpx.Response, field: str, says: str | None = None) -> dict:
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    for problem in detail:
        assert set(problem) == {"field", "msg", "type", "loc"}, problem
    mine = [p for p in detail if p["field"] == field]
    assert mine, detail
    if says is not None:
        assert says in mine[0]["msg"], mine[0]
    return mine[0]


def assert_plain(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], str), body
    return body["detail"]


def multipart(file_name: bytes, content: bytes, **fields: bytes) -> tuple[bytes, dict]:
    """A multipart body written by hand: httpx escapes control characters in a file name."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                 .encode() + value + b"\r\n")
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
             + file_name + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + content
             + f"\r\n--{boundary}--\r\n".encode())
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


# ---- text the database cannot store -------------------------------------------------------

@pytest.mark.parametrize("name", [b'"nul \\u0000 inside"', b'"lone \\ud800 surrogate"',
                                  b'"\\udfff"'], ids=["nul", "high-surrogate", "low-surrogate"])
def test_a_job_name_the_database_cannot_store_is_a_422_and_no_row(stack, api, name):
    before = sql(stack, "SELECT count(*) FROM jobs")[0][0]
    resp = raw_json(api, b'{"model": "mlp", "dataset": "digits", "name": ' + name + b"}")
    problem = assert_422(resp, "name")
    assert problem["loc"] == ["body", "name"] and problem["type"] == "string_not_storable"
    assert sql(stack, "SELECT count(*) FROM jobs")[0][0] == before


def test_a_lone_surrogate_in_a_field_name_is_a_422_not_a_500(api):
    resp = raw_json(api, b'{"model": "mlp", "dataset": "digits", "x\\ud800": 1}')
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]


@pytest.mark.parametrize("upload", [
    {"fields": {"name": b"nul\x00name"}, "file_name": b"ok.zip", "field": "name"},
    {"fields": {}, "file_name": b"nul\x00.zip", "field": "file"},
    {"fields": {}, "file_name": b"x" * 300 + b".zip", "field": "file"},
], ids=["nul-in-name", "nul-in-filename", "filename-over-255"])
def test_an_upload_name_the_database_cannot_store_is_a_422_no_row_no_file(stack, api, upload):
    before = sql(stack, "SELECT count(*) FROM datasets")[0][0]
    body, headers = multipart(upload["file_name"], b"not an archive", **upload["fields"])
    resp = api.post("/datasets", content=body, headers=headers)
    assert_422(resp, upload["field"])
    assert sql(stack, "SELECT count(*) FROM datasets")[0][0] == before
    assert files_under(stack["datasets_dir"]) == []


def test_a_rejected_archive_is_a_422_in_the_list_shape_and_leaves_nothing(stack, api):
    resp = api.post("/datasets", files={"file": ("broken.zip", b"PK\x03\x04 not really")})
    problem = assert_422(resp, "file")
    assert problem["msg"].startswith("dataset rejected: "), problem
    assert problem["loc"] == ["body", "file"]
    assert files_under(stack["datasets_dir"]) == []
    assert sql(stack, "SELECT count(*) FROM datasets")[0][0] == 0


# ---- numbers: no booleans, no NaN or infinities -------------------------------------------

NUMERIC_FIELDS = [("hyperparameters", "epochs"), ("hyperparameters", "batch_size"),
                  ("hyperparameters", "lr"), ("hyperparameters", "momentum"),
                  ("hyperparameters", "weight_decay"), ("hyperparameters", "seed"),
                  ("hyperparameters", "log_every"), ("hyperparameters", "validation_fraction"),
                  (None, "max_runtime_seconds")]


def body_with(parent: str | None, field: str, literal: str) -> bytes:
    value = f'{{"{field}": {literal}}}'
    if parent:
        return f'{{"model": "mlp", "dataset": "digits", "{parent}": {value}}}'.encode()
    return f'{{"model": "mlp", "dataset": "digits", "{field}": {literal}}}'.encode()


@pytest.mark.parametrize("parent,field", NUMERIC_FIELDS, ids=[f for _, f in NUMERIC_FIELDS])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", '"nan"', '"inf"'])
def test_nan_and_infinities_are_not_finite_numbers(api, parent, field, literal):
    dotted = f"{parent}.{field}" if parent else field
    assert_422(raw_json(api, body_with(parent, field, literal)), dotted,
               "must be a finite number")


@pytest.mark.parametrize("parent,field", NUMERIC_FIELDS, ids=[f for _, f in NUMERIC_FIELDS])
@pytest.mark.parametrize("literal", ["true", "false"])
def test_a_boolean_is_not_a_number(api, parent, field, literal):
    dotted = f"{parent}.{field}" if parent else field
    problem = assert_422(raw_json(api, body_with(parent, field, literal)), dotted, "boolean")
    assert problem["type"] in ("int_type", "float_type")


def test_epochs_true_is_refused_and_epochs_1_accepted(api):
    assert_422(api.post("/jobs", json={**VALID, "hyperparameters": {"epochs": True}}),
               "hyperparameters.epochs", "must be an integer, not a boolean")
    assert api.post("/jobs", json={**VALID, "hyperparameters": {"epochs": 1}}).status_code == 201


# ---- ids are echoed cut, never whole ------------------------------------------------------

def test_huge_ids_are_not_echoed_back(api):
    job_id = api.post("/jobs", json=VALID).json()["id"]
    answers = [
        api.get(f"/jobs/{HUGE}"), api.post(f"/jobs/{HUGE}/cancel"), api.delete(f"/jobs/{HUGE}"),
        api.get(f"/jobs/{HUGE}/metrics"), api.get(f"/jobs/{HUGE}/checkpoints"),
        api.get(f"/jobs/{HUGE}/checkpoints/best"), api.get(f"/jobs/{job_id}/checkpoints/{HUGE}"),
        api.get(f"/datasets/{HUGE}"), api.delete(f"/datasets/{HUGE}"),
        api.post("/predict", data={"job_id": HUGE}, files={"image": ("a.png", b"x")}),
        api.post("/jobs", json={**VALID, "model": HUGE}),
        api.post("/jobs", json={**VALID, "dataset": HUGE}),
        api.post("/jobs", json={**VALID, "init_from": {"job_id": HUGE}}),
        api.post("/jobs", json={**VALID, "init_from": {"job_id": job_id, "checkpoint": HUGE}}),
        api.post("/jobs", json=VALID, headers={"Idempotency-Key": HUGE}),
        api.get("/jobs", params={"cursor": HUGE}),
    ]
    for resp in answers:
        assert 400 <= resp.status_code < 500, (resp.request.url, resp.text[:300])
        assert len(resp.content) < 1000, (resp.request.url, resp.text[:300])
        assert HUGE[:100] not in resp.text


def test_a_cursor_hiding_a_nul_is_a_422_not_a_database_error(api):
    import base64

    for raw in (b"2020-01-01T00:00:00|\x00abc", b"0001-01-01T00:00:00+14:00|" + b"a" * 32):
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        assert_422(api.get("/jobs", params={"cursor": cursor}), "cursor")


# ---- the shapes of Starlette's own errors and of the body limit -----------------------------

def test_unknown_route_and_method_answer_in_the_string_shape(api):
    assert "not found" in assert_plain(api.get("/no/such/route"), 404)
    resp = api.put("/jobs")
    assert "PUT" in assert_plain(resp, 405)
    assert resp.headers["allow"] == "GET, HEAD, POST"
    resp = api.request("OPTIONS", f"/datasets/{uuid.uuid4().hex}")
    assert_plain(resp, 405)
    assert resp.headers["allow"] == "DELETE, GET, HEAD"  # every route at this path
    resp = api.patch(f"/jobs/{uuid.uuid4().hex}/cancel")
    assert_plain(resp, 405)
    assert resp.headers["allow"] == "POST"


def test_a_body_that_cannot_be_parsed_is_a_422_in_the_list_shape(api):
    resp = api.post("/datasets", content=b"--x\r\nNone--x--\r\n",
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert_422(resp, "body")
    resp = raw_json(api, b"{not json")
    assert resp.status_code == 422 and resp.json()["detail"][0]["type"] == "json_invalid"


def test_413_bodies_are_plain_sentences_and_leave_nothing(stack, api):
    # Content-Length over the route's limit: refused before a byte is read.
    too_big = b"\0" * (MAX_UPLOAD + 70 * 1024)
    resp = api.post("/datasets", files={"file": ("big.npz", too_big)})
    assert "limit" in assert_plain(resp, 413)

    # No Content-Length (chunked): refused while it streams in.
    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        for _ in range(20):
            yield b"\0" * 10_000
        yield b"\r\n--x--\r\n"

    resp = api.post("/datasets", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert "limit" in assert_plain(resp, 413)

    # Under the middleware's allowance but over the upload limit: the store refuses it.
    body, headers = multipart(b"big.npz", b"\0" * (MAX_UPLOAD + 1000))
    resp = api.post("/datasets", content=body, headers=headers)
    assert "TRAINHUB_DATASET_MAX_UPLOAD_BYTES" in assert_plain(resp, 413)
    assert files_under(stack["datasets_dir"]) == []


# ---- the OpenAPI document lets a client build valid jobs ----------------------------------

def test_openapi_enumerates_models_and_datasets(api):
    spec = api.get("/openapi.json").json()
    job = spec["components"]["schemas"]["JobSpec"]["properties"]
    names, ids = job["model"]["anyOf"]
    assert names["enum"] == list(MODEL_NAMES) and ids["pattern"] == ID_REGEX
    names, ids = job["dataset"]["anyOf"]
    assert names["enum"] == list(DATASET_NAMES) and ids["pattern"] == ID_REGEX
    post = spec["paths"]["/jobs"]["post"]
    assert {"200", "201", "409", "422", "503"} <= set(post["responses"])
    key = next(p for p in post["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header" and key["schema"]["anyOf"][0]["maxLength"] == 200
    hp = spec["components"]["schemas"]["Hyperparameters"]["properties"]
    assert hp["epochs"]["type"] == "integer" and hp["epochs"]["maximum"] == 1000
    runtime = job["max_runtime_seconds"]["anyOf"][0]
    assert runtime["minimum"] == 1 and runtime["maximum"] == 365 * 24 * 3600
    datasets_post = spec["paths"]["/datasets"]["post"]["responses"]
    assert datasets_post["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationErrorBody"}


# ---- Idempotency-Key ----------------------------------------------------------------------

def queued_messages(stack) -> int:
    return stack["broker"].llen(stack["queue"])


def test_same_key_same_body_is_the_same_job_with_200(stack, api):
    key = f"retry-{uuid.uuid4()}"
    first = api.post("/jobs", json=VALID, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    messages = queued_messages(stack)
    # The same job spelled differently (a default written out, keys in another order).
    same = {"hyperparameters": {"lr": 0.001, "epochs": 1}, "dataset": "digits", "model": "mlp"}
    for body in (VALID, same):
        again = api.post("/jobs", json=body, headers={"Idempotency-Key": key})
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == f"/jobs/{first.json()['id']}"
    assert sql(stack, "SELECT count(*) FROM jobs WHERE idempotency_key = %s", key) == [(1,)]
    assert queued_messages(stack) == messages  # no new enqueue
    (digest,), = sql(stack, "SELECT request_hash FROM jobs WHERE id = %s", first.json()["id"])
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_same_key_another_body_is_a_409(stack, api):
    key = f"retry-{uuid.uuid4()}"
    first = api.post("/jobs", json=VALID, headers={"Idempotency-Key": key})
    other = api.post("/jobs", json={**VALID, "name": "another"}, headers={"Idempotency-Key": key})
    assert "another request body" in assert_plain(other, 409)
    assert first.json()["id"] in other.json()["detail"]
    assert sql(stack, "SELECT count(*) FROM jobs WHERE idempotency_key = %s", key) == [(1,)]


def test_keys_are_bounded_and_a_request_without_one_always_creates(api):
    assert_422(api.post("/jobs", json=VALID, headers={"Idempotency-Key": "k" * 201}),
               "Idempotency-Key")
    assert api.post("/jobs", json=VALID, headers={"Idempotency-Key": "k" * 200}).status_code == 201
    ids = {api.post("/jobs", json=VALID).json()["id"] for _ in range(2)}
    assert len(ids) == 2


def test_ten_concurrent_requests_with_one_key_make_one_job(stack):
    key = f"race-{uuid.uuid4()}"
    barrier = threading.Barrier(10)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def submit():
        with httpx.Client(base_url=stack["base"], timeout=30) as client:
            barrier.wait()
            resp = client.post("/jobs", json=VALID, headers={"Idempotency-Key": key})
        with lock:
            answers.append(resp)

    messages = queued_messages(stack)
    threads = [threading.Thread(target=submit) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 9 + [201], [r.text[:200] for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sql(stack, "SELECT count(*) FROM jobs WHERE idempotency_key = %s", key) == [(1,)]
    assert queued_messages(stack) == messages + 1


def test_a_submission_the_broker_refused_releases_its_key(tmp_path):
    dead = free_port()  # nothing listens there
    db_url = create_database("trainhub_bad_nobroker")
    env = env_with(TRAINHUB_DATABASE_URL=db_url, TRAINHUB_DATA_DIR=str(tmp_path / "data"),
                   TRAINHUB_BROKER_URL=f"redis://127.0.0.1:{dead}/0",
                   TRAINHUB_REDIS_URL=f"redis://127.0.0.1:{dead}/1")
    proc, base = start_api(env, tmp_path)
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(2):  # a retry is a new attempt, not the failed job
                resp = client.post("/jobs", json=VALID, headers={"Idempotency-Key": "k1"})
                assert "broker unavailable" in assert_plain(resp, 503)
    finally:
        proc.stop()
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT status, idempotency_key FROM jobs").fetchall()
    assert rows == [("failed", None), ("failed", None)]


# ---- in-process: a failure after the upload was saved leaves nothing ----------------------

@pytest.fixture
def client():
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _upload_dirs() -> set[str]:
    from core.config import get_settings

    folder = get_settings().artifacts_dir / "datasets"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_an_unexpected_error_after_saving_deletes_the_upload_and_its_row(client, monkeypatch):
    from core import queue
    from core.db import new_session
    from core.tables import Dataset

    def boom(*_args, **_kwargs):
        raise RuntimeError("a bug in queueing")

    monkeypatch.setattr(queue, "enqueue", boom)
    before = _upload_dirs()
    resp = client.post("/datasets", files={"file": ("d.npz", npz_bytes())})
    assert resp.status_code == 500 and resp.json() == {"detail": "internal error"}
    new = _upload_dirs() - before
    assert not new, new
    with new_session() as session:
        assert session.query(Dataset).filter(Dataset.status == "processing").count() == 0


def test_a_broker_outage_keeps_the_failed_row_but_no_file(client, monkeypatch):
    from core import queue
    from core.db import new_session
    from core.queue import BrokerUnavailable
    from core.tables import Dataset

    def down(*_args, **_kwargs):
        raise BrokerUnavailable("connection refused")

    monkeypatch.setattr(queue, "enqueue", down)
    before = _upload_dirs()
    resp = client.post("/datasets", files={"file": ("d.npz", npz_bytes())})
    assert resp.status_code == 503 and isinstance(resp.json()["detail"], str)
    assert _upload_dirs() - before == set()
    with new_session() as session:
        row = session.query(Dataset).filter(Dataset.source_filename == "d.npz",
                                            Dataset.status == "failed").first()
        assert row is not None and "broker" in row.error


def test_validation_errors_never_fail_to_render(client):
    # A lone surrogate in an unknown key comes back escaped, as JSON can carry it.
    resp = client.post("/jobs", content=json.dumps({"model": "mlp", "dataset": "digits",
                                                    "\ud800" * 3: 1}).encode(),
                       headers={"content-type": "application/json"})
    assert resp.status_code == 422
    resp.json()
