"""A tenant's own architecture over real HTTP: POST /models with real torch.export archives
(tests/programs.py), GET /models and /models/{id}, DELETE /models/{id}, and a job naming
it, against an API process with authentication on (its own database, a queue no worker
consumes). Another tenant's program is a missing one on every route; a refused upload
leaves no file and no row. (The archives' own checks: tests/unit/core/test_program_archive.py;
memory under hostile uploads: tests/e2e/test_hostile_programs.py.)"""
from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from core import auth
from core.ids import new_id
from core.program_limits import ProgramLimits
from core.program_zip import ProgramZip
from core.tables import Dataset, Program
from tests import programs
from tests.conftest import create_database
from tests.integration.api.test_body_limits import Keys
from tests.procs import env_with, start_api
from tests.programs import CLASSES, SHAPE, export, save
from tests.tenants import client

# Small enough that a junk file over it is quick to send, large enough for the test nets.
MAX_UPLOAD_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("programs")
    db_url = create_database("trainhub_programs")
    env = env_with(TRAINHUB_AUTH="on", TRAINHUB_DATABASE_URL=db_url,
                   TRAINHUB_DATA_DIR=str(tmp / "data"), TRAINHUB_API_KEY=None,
                   TRAINHUB_QUEUE=f"idle-programs-{uuid.uuid4().hex[:8]}",
                   TRAINHUB_PROGRAM_MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES))
    proc, base = start_api(env, tmp)
    keys = Keys(db_url)
    names = {name: f"{name}-{uuid.uuid4().hex[:6]}" for name in ("alice", "bob")}
    clients = {name: client(base, keys.new(user)) for name, user in names.items()}
    clients["admin"] = client(base, (tmp / "data" / "admin.key").read_text().strip())
    try:
        yield {"data": tmp / "data", "keys": keys, "names": names, **clients}
    finally:
        for c in clients.values():
            c.close()
        proc.stop()
        keys.engine.dispose()


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("archives")
    train, eval_ = programs.residual_pair(folder)
    plain = save(export(programs.PlainNet(), training=True), folder / "plain.pt2")
    junk = folder / "junk.pt2"
    junk.write_bytes(b"PK\x03\x04" + bytes(MAX_UPLOAD_BYTES + 1000))
    evil = folder / "evil.pt2"
    evil.write_bytes(pickle.dumps({"not": "a program"}))
    return {"train": train, "eval": eval_, "plain": plain, "junk": junk, "evil": evil}


def upload(c: httpx.Client, train: Path, eval_: Path | None = None, **data) -> httpx.Response:
    files = {"file": (train.name, train.read_bytes())}
    if eval_ is not None:
        files["eval_file"] = (eval_.name, eval_.read_bytes())
    return c.post("/models", files=files, data=data)


def stored(api) -> list[str]:
    """Every file under the artifact store's programs/ folder and the temporary folder."""
    roots = (api["data"] / "artifacts" / "programs", api["data"] / "tmp")
    return sorted(str(p) for root in roots if root.exists() for p in root.rglob("*")
                  if p.is_file())


def program_rows(api) -> set[str]:
    with api["keys"].sessions() as session:
        return set(session.scalars(select(Program.id)))


def scrubbed(resp: httpx.Response, *ids: str) -> str:
    text = resp.text
    for value in ids:
        text = text.replace(value, "<id>")
    return text


def ready_dataset(api, owner: str, classes: int) -> str:
    """A ready upload of the tenant's with `classes` classes of SHAPE images, made straight
    in the database (no worker here)."""
    dataset_id = new_id()
    with api["keys"].sessions.begin() as session:
        session.add(Dataset(id=dataset_id, owner=auth.user_by_name(session, api["names"][owner]).id,
                            name=f"{classes}-classes", status="ready", options={},
                            classes=[f"c{i}" for i in range(classes)], shape=list(SHAPE),
                            counts={"train": {"c0": 8}, "test": {"c0": 2}},
                            cache_key=f"datasets/{dataset_id}/tensors.pt"))
    return dataset_id


def test_a_pair_is_its_owners_alone(api, archives):
    alice, bob, admin = api["alice"], api["bob"], api["admin"]
    resp = upload(alice, archives["train"], archives["eval"], name="residual")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    program_id = body["id"]
    assert resp.headers["location"] == f"/models/{program_id}"
    assert body["name"] == "residual" and body["source"] == "program"
    assert body["input_shape"] == list(SHAPE) and body["num_classes"] == CLASSES
    assert body["parameter_count"] == sum(
        p.numel() for p in programs.residual_net().parameters())
    assert {"aten.conv2d.default", "aten.batch_norm.default", "aten.dropout.default",
            "aten.linear.default"} <= set(body["ops"]) and body["ops"] == sorted(body["ops"])
    assert (body["source_filename"], body["eval_source_filename"]) == ("train.pt2", "eval.pt2")
    files = api["data"] / "artifacts" / "programs" / program_id
    for mode in ("train", "eval"):  # stored without the sample inputs (issue 23)
        expected = archives[mode].with_suffix(".stored.pt2")
        with ProgramZip(archives[mode], ProgramLimits()) as archive:
            archive.copy_without_ignored(expected)
        assert (files / f"{mode}.pt2").read_bytes() == expected.read_bytes()
    assert body["size_bytes"] == sum((files / f"{mode}.pt2").stat().st_size
                                     for mode in ("train", "eval"))

    listed = alice.get("/models").json()["models"]
    assert listed[0]["id"] == program_id and listed[0]["source"] == "program"
    assert listed[0]["program"] == body and listed[0]["parameters"] == body["parameter_count"]
    assert listed[1]["source"] == "builtin"  # the built-ins follow
    assert alice.get("/models", params={"q": "RESID"}).json()["models"][0]["id"] == program_id
    assert alice.get(f"/models/{program_id}").json() == body
    assert program_id not in bob.get("/models").text
    assert program_id in admin.get("/models").text  # an admin sees every tenant's

    missing = new_id()
    for method in ("GET", "DELETE"):
        foreign = bob.request(method, f"/models/{program_id}")
        absent = bob.request(method, f"/models/{missing}")
        assert foreign.status_code == absent.status_code == 404, foreign.text
        assert scrubbed(foreign, program_id) == scrubbed(absent, missing)
    assert alice.get(f"/models/{program_id}").status_code == 200  # bob deleted nothing

    # A job naming it: bob's is the unknown model's 422; alice's needs its class count.
    foreign = bob.post("/jobs", json={"model": program_id, "dataset": "digits"})
    absent = bob.post("/jobs", json={"model": missing, "dataset": "digits"})
    assert foreign.status_code == absent.status_code == 422, foreign.text
    assert scrubbed(foreign, program_id) == scrubbed(absent, missing)
    assert foreign.json()["detail"][0]["field"] == "model"
    wrong = alice.post("/jobs", json={"model": program_id, "dataset": "digits"})
    assert wrong.status_code == 422, wrong.text
    problem, = wrong.json()["detail"]
    assert problem["field"] == "model" and f"outputs {CLASSES} classes" in problem["msg"]
    assert "dataset digits has 10" in problem["msg"]

    dataset = ready_dataset(api, "alice", CLASSES)
    job = alice.post("/jobs", json={"model": program_id, "dataset": dataset})
    assert job.status_code == 201, job.text
    assert job.json()["model"] == program_id and job.json()["name"] == "residual-5-classes"
    busy = alice.delete(f"/models/{program_id}")
    assert busy.status_code == 409 and job.json()["id"] in busy.json()["detail"]
    assert alice.post(f"/jobs/{job.json()['id']}/cancel").status_code == 202
    assert alice.delete(f"/models/{program_id}").status_code == 204
    assert alice.get(f"/models/{program_id}").status_code == 404
    assert not files.exists()


def test_a_lone_program_is_taken_when_its_graph_has_no_mode_dependent_op(api, archives):
    resp = upload(api["alice"], archives["plain"])
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["name"] == "plain" and body["eval_source_filename"] is None
    assert "aten.batch_norm.default" not in body["ops"]
    assert api["alice"].delete(f"/models/{body['id']}").status_code == 204


@pytest.mark.parametrize("case, field, words", [
    ("pickle", "file", "not a torch.export archive"),
    ("lone train program", "file", "aten.batch_norm.default"),
    ("eval of another module", "eval_file", "not the train-mode program's module"),
    ("eval that is a pickle", "eval_file", "not a torch.export archive"),
    ("over the size cap", "file", f"larger than {MAX_UPLOAD_BYTES} bytes"),
])
def test_a_refused_upload_is_a_422_naming_the_field_and_leaves_nothing(api, archives, case,
                                                                      field, words):
    train, eval_ = {"pickle": (archives["evil"], None),
                    "lone train program": (archives["train"], None),
                    "eval of another module": (archives["train"], archives["plain"]),
                    "eval that is a pickle": (archives["train"], archives["evil"]),
                    "over the size cap": (archives["junk"], None)}[case]
    before_files, before_rows = stored(api), program_rows(api)
    resp = upload(api["bob"], train, eval_)
    assert resp.status_code == 422, resp.text
    problem, = resp.json()["detail"]
    assert problem["field"] == field and words in problem["msg"], problem
    assert stored(api) == before_files and program_rows(api) == before_rows


def test_form_fields_are_checked(api, archives):
    bob = api["bob"]
    assert bob.post("/models", data={"name": "x"}).status_code == 422  # no file
    long = upload(bob, archives["plain"], name="n" * 201)
    assert long.status_code == 422 and long.json()["detail"][0]["field"] == "name"
    over = bob.post("/models", content=b"x" * (2 * MAX_UPLOAD_BYTES + 70_000),
                    headers={"content-type": "multipart/form-data; boundary=b"})
    assert over.status_code == 413
