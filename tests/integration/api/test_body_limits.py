"""Limits and credentials against real API processes with authentication on: per-key rate
limits (POST /jobs, /predict, /datasets), per-tenant caps (active jobs, stored bytes), both
holding across two API processes on one database; the JSON body cap; 401s; CORS; the web
page's session cookie; and no key ever in a log.

Three API processes, started together, on two databases of their own; no worker consumes
their queue, so submitted jobs stay queued:
  rates, rates2 -- small rate limits, caps out of the way; rates2 also allows one browser
                   origin (CORS), which changes nothing else;
  caps          -- small caps, no rate limits.
Users and keys are made straight in each database (tests/integration/cli/test_admin.py
covers `trainhub admin`); revoking uses the real command.
"""
from __future__ import annotations

import io
import itertools
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from core import auth
from core.errors import NotFound
from core.states import DatasetStatus
from core.tables import Dataset
from tests.conftest import create_database
from tests.procs import Proc, env_with, free_port, wait_http
from tests.tenants import admin_cli, client

JOBS_PER_MINUTE, PREDICT_PER_MINUTE, DATASETS_PER_MINUTE = 3, 3, 2
MAX_ACTIVE_JOBS = 2
JSON_MAX_BYTES = 65536
APP_ORIGIN, EVIL_ORIGIN = "https://app.example", "https://evil.example"
JOB = {"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}}


def tiny_npz(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
             y_train=(np.arange(20) % 2).astype(np.uint8),
             x_test=rng.integers(0, 256, (6, 8, 8), dtype=np.uint8),
             y_test=(np.arange(6) % 2).astype(np.uint8))
    return buffer.getvalue()


# Stored-bytes cap: exactly one upload fits (the check adds the upload's size to what the
# tenant stores; after processing it stores the tensor file, more than nothing).
MAX_STORED_BYTES = len(tiny_npz())


class Keys:
    """Users and keys made straight in one API's database."""

    def __init__(self, db_url: str):
        self.engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def new(self, user: str | None = None, is_admin: bool = False) -> str:
        """A new key for `user` (made if missing; a fresh user when None)."""
        user = user or f"u-{uuid.uuid4().hex[:10]}"
        with self.sessions.begin() as session:
            try:
                row = auth.user_by_name(session, user)
            except NotFound:
                row = auth.create_user(session, user, is_admin)
            return auth.create_key(session, row)[1]


@dataclass
class Api:
    name: str
    base: str
    proc: Proc
    env: dict[str, str]
    keys: Keys
    admin: str  # the first admin key, which the API wrote to its data dir


@pytest.fixture(scope="module")
def apis(tmp_path_factory) -> dict[str, Api]:
    tmp = tmp_path_factory.mktemp("limits")
    common = dict(TRAINHUB_AUTH="on", TRAINHUB_JSON_MAX_BYTES=str(JSON_MAX_BYTES),
                  TRAINHUB_CORS_ORIGINS=None, TRAINHUB_API_KEY=None)
    rates_db, caps_db = create_database("trainhub_rates"), create_database("trainhub_caps")
    rates_env = env_with(
        **common, TRAINHUB_DATABASE_URL=rates_db, TRAINHUB_DATA_DIR=str(tmp / "rates-data"),
        TRAINHUB_QUEUE=f"idle-rates-{uuid.uuid4().hex[:8]}",
        TRAINHUB_RATE_LIMIT_JOBS_PER_MINUTE=str(JOBS_PER_MINUTE),
        TRAINHUB_RATE_LIMIT_PREDICT_PER_MINUTE=str(PREDICT_PER_MINUTE),
        TRAINHUB_RATE_LIMIT_DATASETS_PER_MINUTE=str(DATASETS_PER_MINUTE),
        TRAINHUB_TENANT_MAX_ACTIVE_JOBS="1000", TRAINHUB_TENANT_MAX_STORED_BYTES="0")
    caps_env = env_with(
        **common, TRAINHUB_DATABASE_URL=caps_db, TRAINHUB_DATA_DIR=str(tmp / "caps-data"),
        TRAINHUB_QUEUE=f"idle-caps-{uuid.uuid4().hex[:8]}",
        TRAINHUB_RATE_LIMIT_JOBS_PER_MINUTE="0", TRAINHUB_RATE_LIMIT_PREDICT_PER_MINUTE="0",
        TRAINHUB_RATE_LIMIT_DATASETS_PER_MINUTE="0",
        TRAINHUB_TENANT_MAX_ACTIVE_JOBS=str(MAX_ACTIVE_JOBS),
        TRAINHUB_TENANT_MAX_STORED_BYTES=str(MAX_STORED_BYTES))
    envs = {"rates": rates_env, "caps": caps_env,
            "rates2": {**rates_env, "TRAINHUB_CORS_ORIGINS": APP_ORIGIN}}
    procs: dict[str, tuple[Proc, str]] = {}
    keys = {"rates": Keys(rates_db), "caps": Keys(caps_db)}
    try:
        # All at once (rates and rates2 also race to make their database's first admin).
        for name, env in envs.items():
            port = free_port()
            procs[name] = (Proc(["api", "--port", str(port)], env, tmp / f"{name}.log"),
                           f"http://127.0.0.1:{port}")
        for proc, base in procs.values():
            wait_http(base, proc)
        admins = {db: (tmp / f"{db}-data" / "admin.key").read_text().strip()
                  for db in ("rates", "caps")}
        yield {name: Api(name, base, proc, envs[name], keys[name.rstrip("2")],
                         admins[name.rstrip("2")])
               for name, (proc, base) in procs.items()}
    finally:
        for proc, _base in procs.values():
            proc.stop()
        for k in keys.values():
            k.engine.dispose()


@pytest.fixture(scope="module")
def rates(apis) -> Api:
    return apis["rates"]


@pytest.fixture(scope="module")
def caps(apis) -> Api:
    return apis["caps"]


def fresh_window(need: float = 6.0) -> None:
    """Rate limits count in fixed minute windows: start a burst with at least `need` seconds
    of the window left, so it is counted in one."""
    left = 60 - time.time() % 60
    if left < need:
        time.sleep(left + 0.1)


def post_job(base: str, key: str | None, **kwargs) -> httpx.Response:
    with client(base, key) as c:
        return c.post("/jobs", json=JOB, **kwargs)


def job_count(base: str, key: str) -> int:
    with client(base, key) as c:
        response = c.get("/jobs", params={"limit": 500})
        assert response.status_code == 200, response.text
        return len(response.json()["jobs"])


def assert_rate_limited(response: httpx.Response, setting: str, per_minute: int,
                        action: str) -> None:
    assert response.status_code == 429, response.text
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, retry_after
    detail = response.json()["detail"]
    assert setting in detail and f"at most {per_minute} {action}" in detail, detail


def processed(api: Api, dataset_id: str) -> None:
    """No worker consumes these APIs' queues: record in the database the end a worker would
    give an upload (ready; it then stores its tensor file), so that it can be deleted."""
    with api.keys.sessions.begin() as session:
        session.get(Dataset, dataset_id).status = DatasetStatus.ready.value


def upload(base: str, key: str, data: bytes, name: str = "tiny.npz") -> httpx.Response:
    with client(base, key) as c:
        return c.post("/datasets", files={"file": (name, data, "application/octet-stream")})


# --- rate limits -------------------------------------------------------------------------

def test_the_fourth_job_in_a_minute_is_429_with_retry_after_and_makes_no_job(rates):
    key = rates.keys.new("alice")
    fresh_window()
    codes = [post_job(rates.base, key).status_code for _ in range(JOBS_PER_MINUTE)]
    assert codes == [201] * JOBS_PER_MINUTE
    assert_rate_limited(post_job(rates.base, key), "TRAINHUB_RATE_LIMIT_JOBS_PER_MINUTE",
                        JOBS_PER_MINUTE, "POST /jobs")
    assert_rate_limited(post_job(rates.base, key), "TRAINHUB_RATE_LIMIT_JOBS_PER_MINUTE",
                        JOBS_PER_MINUTE, "POST /jobs")
    assert job_count(rates.base, key) == JOBS_PER_MINUTE
    # Reads are not limited.
    with client(rates.base, key) as c:
        assert c.get("/jobs").status_code == 200


def test_the_limit_is_per_key_not_per_user_or_server(rates):
    first = rates.keys.new("carol")
    fresh_window()
    for _ in range(JOBS_PER_MINUTE):
        assert post_job(rates.base, first).status_code == 201
    assert post_job(rates.base, first).status_code == 429
    second = rates.keys.new("carol")  # another key of the same user
    assert post_job(rates.base, second).status_code == 201
    other_tenant = rates.keys.new("dave")
    assert post_job(rates.base, other_tenant).status_code == 201
    assert job_count(rates.base, second) == JOBS_PER_MINUTE + 1  # carol's, both keys


def test_an_admin_key_is_exempt_from_rate_limits(rates):
    fresh_window()
    codes = [post_job(rates.base, rates.admin).status_code
             for _ in range(JOBS_PER_MINUTE + 2)]
    assert codes == [201] * (JOBS_PER_MINUTE + 2)
    another_admin = rates.keys.new("root", is_admin=True)
    codes = [post_job(rates.base, another_admin).status_code
             for _ in range(JOBS_PER_MINUTE + 1)]
    assert codes == [201] * (JOBS_PER_MINUTE + 1)


def test_predict_is_rate_limited_before_the_job_is_looked_up(rates):
    key = rates.keys.new()
    missing_job = uuid.uuid4().hex

    def predict() -> httpx.Response:
        with client(rates.base, key) as c:
            return c.post("/predict", data={"job_id": missing_job},
                          files={"image": ("a.png", b"not really a png", "image/png")})

    fresh_window()
    answers = [predict() for _ in range(PREDICT_PER_MINUTE)]
    assert [a.status_code for a in answers] == [404] * PREDICT_PER_MINUTE, answers[0].text
    assert_rate_limited(predict(), "TRAINHUB_RATE_LIMIT_PREDICT_PER_MINUTE",
                        PREDICT_PER_MINUTE, "POST /predict")


def test_dataset_uploads_are_rate_limited(rates):
    key = rates.keys.new()
    fresh_window()
    for seed in range(DATASETS_PER_MINUTE):
        response = upload(rates.base, key, tiny_npz(seed))
        assert response.status_code == 202, response.text
    assert_rate_limited(upload(rates.base, key, tiny_npz(9)),
                        "TRAINHUB_RATE_LIMIT_DATASETS_PER_MINUTE", DATASETS_PER_MINUTE,
                        "POST /datasets")
    with client(rates.base, key) as c:
        uploads = [d for d in c.get("/datasets").json()["datasets"] if d["source"] == "upload"]
    assert len(uploads) == DATASETS_PER_MINUTE


def test_a_rate_limit_holds_across_two_api_processes_on_one_database(apis):
    first, second = apis["rates"], apis["rates2"]
    key = first.keys.new()
    bases = itertools.islice(itertools.cycle([first.base, second.base]), 4 * JOBS_PER_MINUTE)
    fresh_window()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda base: post_job(base, key).status_code, bases))
    assert sorted(codes) == [201] * JOBS_PER_MINUTE + [429] * 3 * JOBS_PER_MINUTE, codes
    assert job_count(second.base, key) == JOBS_PER_MINUTE


# --- caps ----------------------------------------------------------------------------------

def test_the_active_jobs_cap_passes_when_a_job_is_cancelled(caps):
    key = caps.keys.new("erin")
    ids = []
    for _ in range(MAX_ACTIVE_JOBS):
        response = post_job(caps.base, key)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    refused = post_job(caps.base, key)
    assert refused.status_code == 429, refused.text
    assert "TRAINHUB_TENANT_MAX_ACTIVE_JOBS" in refused.json()["detail"]
    retry_after = refused.headers["retry-after"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    # The cap is the tenant's: another key of the same user is refused too; another
    # tenant and an admin are not.
    assert post_job(caps.base, caps.keys.new("erin")).status_code == 429
    assert post_job(caps.base, caps.keys.new("frank")).status_code == 201
    assert [post_job(caps.base, caps.admin).status_code
            for _ in range(MAX_ACTIVE_JOBS + 1)] == [201] * (MAX_ACTIVE_JOBS + 1)

    with client(caps.base, key) as c:
        cancelled = c.post(f"/jobs/{ids[0]}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    assert post_job(caps.base, key).status_code == 201
    assert post_job(caps.base, key).status_code == 429
    assert job_count(caps.base, key) == MAX_ACTIVE_JOBS + 1


def test_the_active_jobs_cap_holds_for_concurrent_submissions(caps):
    # Each request checks the cap and inserts in its own transaction, as two API processes
    # would: without the tenant's lock more than the cap would get through.
    key = caps.keys.new()
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: post_job(caps.base, key).status_code, range(10)))
    assert sorted(codes) == [201] * MAX_ACTIVE_JOBS + [429] * (10 - MAX_ACTIVE_JOBS), codes
    assert job_count(caps.base, key) == MAX_ACTIVE_JOBS


def test_the_stored_bytes_cap_is_409_until_a_dataset_is_deleted(caps):
    key = caps.keys.new("grace")
    first = upload(caps.base, key, tiny_npz(0))
    assert first.status_code == 202, first.text
    assert first.json()["stored_bytes"] > 0
    processed(caps, first.json()["id"])
    refused = upload(caps.base, key, tiny_npz(1))
    assert refused.status_code == 409, refused.text
    assert "TRAINHUB_TENANT_MAX_STORED_BYTES" in refused.json()["detail"]
    assert "retry-after" not in refused.headers  # time does not pass a 409 cap
    with client(caps.base, key) as c:
        uploads = [d["id"] for d in c.get("/datasets").json()["datasets"]
                   if d["source"] == "upload"]
        assert uploads == [first.json()["id"]]  # the refused upload left nothing
        assert c.delete(f"/datasets/{first.json()['id']}").status_code == 204
    again = upload(caps.base, key, tiny_npz(1))
    assert again.status_code == 202, again.text
    # Another tenant has its own allowance; an admin has none.
    assert upload(caps.base, caps.keys.new("heidi"), tiny_npz(2)).status_code == 202
    for seed in (3, 4):
        assert upload(caps.base, caps.admin, tiny_npz(seed)).status_code == 202


# --- the JSON body cap ------------------------------------------------------------------

def test_a_json_body_over_the_cap_is_413_and_makes_no_job(rates):
    before = job_count(rates.base, rates.admin)
    body = b'{"model": "mlp", "dataset": "digits", "name": "' + b"x" * JSON_MAX_BYTES + b'"}'
    with client(rates.base, rates.admin) as c:
        sized = c.post("/jobs", content=body, headers={"content-type": "application/json"})
        assert sized.status_code == 413, sized.text
        assert str(JSON_MAX_BYTES) in sized.json()["detail"]
        sent = 0

        def streamed():  # 60 MB with no Content-Length (chunked): refused while it streams
            nonlocal sent
            yield b'{"model": "mlp", "dataset": "digits", "name": "'
            chunk = b"y" * (1024 * 1024)
            for _ in range(60):
                sent += len(chunk)
                yield chunk
            yield b'"}'

        chunked = c.post("/jobs", content=streamed(),
                         headers={"content-type": "application/json"})
        assert "content-length" not in chunked.request.headers
        assert chunked.status_code == 413, chunked.text
        assert str(JSON_MAX_BYTES) in chunked.json()["detail"]
        # The same cap on another JSON route.
        login = c.post("/session", json={"key": "k" * (JSON_MAX_BYTES + 1)})
        assert login.status_code == 413
    assert job_count(rates.base, rates.admin) == before
    assert rates.proc.popen.poll() is None


# --- credentials ---------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [None, "Basic x", "Bearer", "Basic",
                                           "Token thk_0123456789abcdef_" + "A" * 43,
                                           "Bearer thk_0123456789abcdef_" + "A" * 43,
                                           "Bearer not-a-key"])
def test_without_a_valid_key_every_protected_route_is_401_with_www_authenticate(rates,
                                                                               authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    with httpx.Client(base_url=rates.base, timeout=30) as c:
        for method, path in (("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/datasets"),
                             ("GET", "/session"), ("DELETE", "/session")):
            response = c.request(method, path, headers=headers,
                                 **({"json": JOB} if method == "POST" else {}))
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer"), response.headers
        assert c.get("/health", headers=headers).status_code == 200  # public


def test_without_cors_origins_no_origin_is_allowed(rates):
    with httpx.Client(base_url=rates.base, timeout=30) as c:
        simple = c.get("/health", headers={"Origin": EVIL_ORIGIN})
        preflight = c.options("/jobs", headers={"Origin": EVIL_ORIGIN,
                                                "Access-Control-Request-Method": "POST"})
        with_key = c.get("/jobs", headers={"Origin": EVIL_ORIGIN,
                                           "Authorization": f"Bearer {rates.admin}"})
    for response in (simple, preflight, with_key):
        assert "access-control-allow-origin" not in response.headers, response.headers
    assert with_key.status_code == 200


def test_a_configured_origin_is_allowed_and_no_other(apis):
    cors = apis["rates2"]

    def preflight(origin: str) -> httpx.Response:
        return httpx.options(f"{cors.base}/jobs", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})

    allowed = preflight(APP_ORIGIN)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers
    refused = preflight(EVIL_ORIGIN)
    assert "access-control-allow-origin" not in refused.headers, refused.headers
    assert refused.status_code >= 400
    with client(cors.base, cors.admin) as c:
        assert c.get("/jobs", headers={"Origin": APP_ORIGIN}).headers[
            "access-control-allow-origin"] == APP_ORIGIN
        assert "access-control-allow-origin" not in c.get(
            "/jobs", headers={"Origin": EVIL_ORIGIN}).headers
    # The API without the setting allows none (the other process on the same database).
    assert "access-control-allow-origin" not in httpx.options(
        f"{apis['rates'].base}/jobs", timeout=30,
        headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST"}).headers


@pytest.mark.parametrize("value, origins", [
    (APP_ORIGIN, [APP_ORIGIN]),
    (f"{APP_ORIGIN}, https://b.example", [APP_ORIGIN, "https://b.example"]),
    (f'["{APP_ORIGIN}"]', [APP_ORIGIN]), ("", [])])
def test_cors_origins_are_read_comma_separated_as_documented(monkeypatch, value, origins):
    from core.config import Settings

    monkeypatch.setenv("TRAINHUB_CORS_ORIGINS", value)
    assert Settings().cors_origins == origins


# --- the web page's session cookie ---------------------------------------------------

def log_in(base: str, key: str) -> tuple[httpx.Response, str]:
    response = httpx.post(f"{base}/session", json={"key": key}, timeout=30)
    assert response.status_code == 200, response.text
    cookie = response.cookies.get("trainhub_session")
    assert cookie
    return response, cookie


def with_cookie(base: str, token: str) -> httpx.Client:
    # Sent by hand: a cookie jar's rules for IP-address hosts are beside the point here.
    return httpx.Client(base_url=base, timeout=30,
                        headers={"Cookie": f"trainhub_session={token}"})


def test_a_key_logs_in_to_an_httponly_strict_cookie_that_stands_for_it(rates):
    key = rates.keys.new("ivan")
    response, token = log_in(rates.base, key)
    assert response.json()["user"] == "ivan" and response.json()["auth"] == "on"
    set_cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower(): part.strip()
                  for part in set_cookie.split(";")[1:]}
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=strict"
    assert attributes["path"] == "Path=/"
    assert key not in set_cookie and token != key

    with with_cookie(rates.base, token) as c:
        assert c.get("/session").json()["user"] == "ivan"
        listed = c.get("/jobs")
        assert listed.status_code == 200 and listed.json()["jobs"] == []
        # A state-changing request from another origin cannot ride on the cookie...
        forged = c.post("/jobs", json=JOB, headers={"Origin": EVIL_ORIGIN})
        assert forged.status_code == 403, forged.text
        assert c.delete("/session", headers={"Origin": EVIL_ORIGIN}).status_code == 403
        # ...one from the page's own origin can.
        own = c.post("/jobs", json=JOB, headers={"Origin": rates.base})
        assert own.status_code == 201, own.text
        assert [j["id"] for j in c.get("/jobs").json()["jobs"]] == [own.json()["id"]]
        ended = c.delete("/session")
        assert ended.status_code == 204
        after = c.get("/jobs")
        assert after.status_code == 401 and "session" in after.json()["detail"]
    with client(rates.base, key) as c:  # logging out does not touch the key
        assert c.get("/jobs").status_code == 200


def test_a_wrong_key_does_not_log_in(rates):
    for key in ("thk_0123456789abcdef_" + "A" * 43, "nonsense"):
        response = httpx.post(f"{rates.base}/session", json={"key": key}, timeout=30)
        assert response.status_code == 401 and "set-cookie" not in response.headers


def test_revoking_the_key_ends_its_cookie_session(rates):
    key = rates.keys.new("judy")
    _response, token = log_in(rates.base, key)
    _response, token2 = log_in(rates.base, key)
    with with_cookie(rates.base, token) as c:
        assert c.get("/jobs").status_code == 200
    key_id = key.split("_")[1]
    done = admin_cli(rates.env, "revoke-key", key_id)
    assert key_id in done.stdout
    for t in (token, token2):
        with with_cookie(rates.base, t) as c:
            assert c.get("/jobs").status_code == 401
    with client(rates.base, key) as c:
        assert c.get("/jobs").status_code == 401
    login = httpx.post(f"{rates.base}/session", json={"key": key}, timeout=30)
    assert login.status_code == 401


# --- last: nothing above put a key in a log ------------------------------------------------

def test_no_api_process_logged_a_key(apis):
    for api in apis.values():
        # Keys went to every one of them above (this also writes one more, wrongly sent).
        httpx.get(f"{api.base}/jobs", timeout=30,
                  headers={"Authorization": "Bearer thk_0123456789abcdef_" + "B" * 43})
        log = api.proc.log()
        assert '"GET /jobs HTTP/1.1" 401' in log  # the access log is on: requests are in it
        assert "thk_" not in log, f"{api.name}: {Path(api.proc.log_path)}"
        assert api.admin not in log and api.admin.split("_", 2)[2] not in log
    # The process that made the first admin key said where it is.
    for db in ("rates", "caps"):
        pair = [a for a in apis.values() if a.keys is apis[db].keys]
        assert sum("admin.key" in a.proc.log() for a in pair) == 1, [a.name for a in pair]
