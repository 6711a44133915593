"""`trainhub admin` (users and keys, straight in the database) and how the client verbs find
their key, as real subprocesses against a database of their own and an API started with
`trainhub api` (authentication on, no worker: jobs stay queued). Also `trainhub api`'s
start: the first admin key written (mode 600) before the API answers, and authentication
off refused on a reachable address."""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import create_database
from tests.procs import REPO, Proc, env_with, free_port, wait_http
from tests.tenants import client

KEY_RE = re.compile(r"^thk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})\Z")
JOB = {"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}}


def trainhub(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def trainhub_all(env: dict[str, str], *commands: tuple[str, ...]) -> list:
    """Several commands at once (each is a second or two of imports: in parallel, the
    module's run stays short)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: trainhub(env, *args), commands))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`trainhub api` with authentication on, on a new database and data dir (what was on
    disk the moment /health first answered is recorded); beside it, on a database of its
    own, `trainhub api` with authentication off on 127.0.0.1. While they start, the
    tenants alice and bob are made with create-user (an admin is made only after: the API
    makes the first admin key only when there is no admin)."""
    tmp = tmp_path_factory.mktemp("admin-cli")
    data = tmp / "data"
    env = env_with(TRAINHUB_DATABASE_URL=create_database("trainhub_admincli"),
                   TRAINHUB_DATA_DIR=str(data), TRAINHUB_AUTH="on",
                   TRAINHUB_QUEUE=f"idle-admin-{uuid.uuid4().hex[:8]}",
                   TRAINHUB_API_KEY=None, TRAINHUB_URL=None, COLUMNS=None)
    off_env = {**env, "TRAINHUB_AUTH": "off", "TRAINHUB_DATA_DIR": str(tmp / "off-data"),
               "TRAINHUB_DATABASE_URL": create_database("trainhub_authoff")}
    key_file = data / "admin.key"
    assert not key_file.exists()
    port, off_port = free_port(), free_port()
    base, off_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{off_port}"
    procs = []
    try:
        procs.append(Proc(["api", "--port", str(port)], env, tmp / "api.log"))
        procs.append(Proc(["api", "--host", "127.0.0.1", "--port", str(off_port)], off_env,
                          tmp / "api-off.log"))
        with ThreadPoolExecutor(2) as pool:
            tenants = pool.map(lambda name: trainhub(env, "admin", "create-user", name),
                               ["alice", "bob"])
            wait_http(base, procs[0])
            at_first_answer = key_file.stat() if key_file.exists() else None
            wait_http(off_base, procs[1])
            alice, bob = tenants
        yield {"env": env, "base": base, "proc": procs[0], "key_file": key_file, "tmp": tmp,
               "stat_at_first_answer": at_first_answer,
               "admin": key_file.read_text().strip() if key_file.exists() else None,
               "off": {"base": off_base, "proc": procs[1], "env": off_env},
               "create_user": {"alice": alice, "bob": bob}}
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture(scope="module")
def made(server):
    """Every `trainhub admin` command's outcome: root (an admin) made with create-user,
    a refused duplicate, keys made with create-key, one of alice's revoked by its id, and
    list-keys after all that."""
    env = server["env"]
    root, duplicate, alice_key, doomed_key, bob_key = trainhub_all(
        env, ("admin", "create-user", "root", "--admin"), ("admin", "create-user", "alice"),
        ("admin", "create-key", "alice"), ("admin", "create-key", "alice"),
        ("admin", "create-key", "bob"))
    doomed = key_of(doomed_key)
    root_key, revoke = trainhub_all(env, ("admin", "create-key", "root"),
                                    ("admin", "revoke-key", KEY_RE.match(doomed).group(1)))
    listing = trainhub(env, "admin", "list-keys")
    return {**server["create_user"], "root": root, "duplicate": duplicate,
            "alice_key": alice_key, "doomed_key": doomed_key, "root_key": root_key,
            "bob_key": bob_key, "revoked": {"key": doomed, "revoke": revoke, "list": listing}}


def key_of(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


def whoami(base: str, key: str) -> dict:
    with client(base, key) as c:
        response = c.get("/session")
    assert response.status_code == 200, response.text
    return response.json()


def test_the_api_wrote_the_admin_key_private_before_it_answered(server):
    at_first = server["stat_at_first_answer"]
    assert at_first is not None, "admin.key did not exist when /health first answered"
    assert stat.S_IMODE(at_first.st_mode) == 0o600
    key = server["admin"]
    assert KEY_RE.match(key)
    assert whoami(server["base"], key) == {"user": "admin", "is_admin": True, "auth": "on",
                                           "expires_at": None}
    log = server["proc"].log()
    assert str(server["key_file"]) in log  # it says where the key is...
    assert "thk_" not in log and key.split("_", 2)[2] not in log  # ...and never the key


def test_create_user_and_a_duplicate_name(server, made):
    assert made["alice"].returncode == 0, made["alice"].stderr
    assert made["alice"].stdout.startswith("created user alice (")
    assert "trainhub admin create-key alice" in made["alice"].stdout
    assert made["root"].returncode == 0, made["root"].stderr
    assert made["root"].stdout.startswith("created admin user root (")
    assert_one_error_line(made["duplicate"], "alice", "already exists")
    # The refusal changed nothing: alice is still a tenant; root is an admin.
    assert whoami(server["base"], key_of(made["alice_key"]))["is_admin"] is False
    assert whoami(server["base"], key_of(made["root_key"]))["is_admin"] is True


def test_create_key_prints_the_key_alone_on_the_last_line(server, made):
    for user in ("alice", "root", "bob"):
        done = made[f"{user}_key"]
        key = key_of(done)
        match = KEY_RE.match(key)
        assert match, done.stdout
        assert done.stdout.endswith(key + "\n")
        assert match.group(1) in done.stderr  # the key's id is named beside it
        assert key not in done.stderr
        assert whoami(server["base"], key)["user"] == user


def table_rows(stdout: str) -> dict[str, list[str]]:
    """list-keys' rows by key id (the first column)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if cells and re.fullmatch(r"[0-9a-f]{16}", cells[0]):
            rows[cells[0]] = cells
    return rows


def test_list_keys_shows_ids_users_admins_and_revocations_never_the_keys(server, made):
    revoked = made["revoked"]
    done = revoked["list"]
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0]
    for column in ("key id", "user", "admin", "created", "revoked"):
        assert column in header, header
    rows = table_rows(done.stdout)
    keys = {name: key_of(made[f"{name}_key"]) for name in ("alice", "root", "bob")}
    keys["admin"] = server["admin"]
    keys["doomed"] = revoked["key"]
    ids = {name: KEY_RE.match(key).group(1) for name, key in keys.items()}
    assert set(rows) == set(ids.values())
    expected = {"alice": ["alice", ""], "root": ["root", "yes"], "bob": ["bob", ""],
                "admin": ["admin", "yes"], "doomed": ["alice", ""]}
    for name, cells in expected.items():
        row = rows[ids[name]]
        assert row[1:3] == cells, row
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", row[3]), row
        if name == "doomed":
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", row[4]), row
        else:
            assert row[4] == "", row
    for key in keys.values():
        assert KEY_RE.match(key).group(2) not in done.stdout + done.stderr
    assert "thk_" not in done.stdout + done.stderr


def test_revoke_key_by_id_and_the_api_refuses_the_key(server, made):
    revoked = made["revoked"]
    key_id = KEY_RE.match(revoked["key"]).group(1)
    assert revoked["revoke"].returncode == 0, revoked["revoke"].stderr
    assert revoked["revoke"].stdout.strip() == f"revoked key {key_id}"
    with client(server["base"], revoked["key"]) as c:
        refused = c.get("/jobs")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    # alice's other key is untouched.
    assert whoami(server["base"], key_of(made["alice_key"]))["user"] == "alice"


# --- how the client verbs find a key --------------------------------------------------

@pytest.fixture(scope="module")
def jobs(server, made):
    """One queued job for alice and one for bob, named after them."""
    keys = {user: key_of(made[f"{user}_key"]) for user in ("alice", "bob")}
    ids = {}
    for user, key in keys.items():
        with client(server["base"], key) as c:
            response = c.post("/jobs", json={**JOB, "name": f"{user}-job"})
        assert response.status_code == 201, response.text
        ids[user] = response.json()["id"]
    return {"keys": keys, "ids": ids}


def listed(done: subprocess.CompletedProcess) -> set[str]:
    assert done.returncode == 0, (done.stdout, done.stderr)
    return {name for name in ("alice-job", "bob-job") if name in done.stdout}


def test_the_cli_finds_its_key_option_then_environment_then_local_admin_key(server, jobs,
                                                                            made):
    revoked = made["revoked"]
    port = server["base"].rsplit(":", 1)[1]
    url = server["base"]
    env = server["env"]  # the server's TRAINHUB_DATA_DIR, no TRAINHUB_API_KEY
    alice, bob = jobs["keys"]["alice"], jobs["keys"]["bob"]
    with_bob = {**env, "TRAINHUB_API_KEY": bob}
    # No key anywhere, and no admin.key in this machine's data dir: refused, one line.
    elsewhere = {**env, "TRAINHUB_DATA_DIR": str(server["tmp"] / "no-data-here")}
    commands = [(env, f"http://127.0.0.1:{port}"), (env, f"http://localhost:{port}"),
                (with_bob, url), (with_bob, url, "--key", alice), (elsewhere, url),
                (env, url, "--key", revoked["key"])]
    with ThreadPoolExecutor(3) as pool:
        done = list(pool.map(lambda c: trainhub(c[0], "list", "--url", *c[1:]), commands))
    for loopback in done[:2]:  # the admin key the server wrote: the admin sees all
        assert listed(loopback) == {"alice-job", "bob-job"}
        assert jobs["ids"]["alice"] in loopback.stdout and jobs["ids"]["bob"] in loopback.stdout
    assert listed(done[2]) == {"bob-job"}  # $TRAINHUB_API_KEY
    assert listed(done[3]) == {"alice-job"}  # --key wins over it
    assert_one_error_line(done[4], "401")
    assert_one_error_line(done[5], "401", "revoked")


@pytest.fixture
def data_dir_with_admin_key(tmp_path):
    """This process's settings pointed at a data dir holding an admin.key (restored after)."""
    from core.config import get_settings

    saved = {name: os.environ.get(name) for name in ("TRAINHUB_DATA_DIR", "TRAINHUB_API_KEY")}
    key = "thk_0123456789abcdef_" + "K" * 43
    (tmp_path / "admin.key").write_text(key + "\n")
    os.environ["TRAINHUB_DATA_DIR"] = str(tmp_path)
    os.environ.pop("TRAINHUB_API_KEY", None)
    get_settings.cache_clear()
    try:
        assert get_settings().admin_key_file == tmp_path / "admin.key"
        yield key
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


def test_api_key_reads_admin_key_only_for_a_loopback_url(data_dir_with_admin_key):
    from cli.client import Api, api_key

    key = data_dir_with_admin_key
    for url in ("http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"):
        assert api_key(url, None) == key, url
    for url in ("http://10.255.255.1:9", "https://trainhub.example",
                "http://127.0.0.1.evil.example:9", "http://localhost.evil.example:9"):
        assert api_key(url, None) is None, url
    with Api("http://10.255.255.1:9") as api:
        assert "authorization" not in api.http.headers
    assert api_key("http://10.255.255.1:9", " given ") == "given"
    os.environ["TRAINHUB_API_KEY"] = "from-env"
    assert api_key("http://10.255.255.1:9", None) == "from-env"
    assert api_key("http://127.0.0.1:9", None) == "from-env"
    assert api_key("http://127.0.0.1:9", "option") == "option"


# --- `trainhub api` with authentication off ------------------------------------------------

def test_auth_off_is_refused_on_a_reachable_address_at_once(server, tmp_path):
    env = {**server["env"], "TRAINHUB_AUTH": "off", "TRAINHUB_DATA_DIR": str(tmp_path)}
    started = time.monotonic()
    done = trainhub(env, "api", "--host", "0.0.0.0", "--port", str(free_port()), timeout=30)
    assert time.monotonic() - started < 20
    assert_one_error_line(done, "TRAINHUB_AUTH=off", "0.0.0.0")
    assert not (tmp_path / "admin.key").exists()


def test_auth_off_on_loopback_starts_and_warns(server):
    off = server["off"]
    assert httpx.get(f"{off['base']}/jobs", timeout=30).status_code == 200  # no key needed
    lines = [line for line in off["proc"].log().splitlines() if "AUTHENTICATION IS OFF" in line]
    assert lines and all("WARNING" in line for line in lines), lines
