"""Tenant isolation, generated from the API's own OpenAPI document: for every operation that
takes a job, dataset or model id (in its path or in its body: events, logs, checkpoints,
predict, datasets, models, init_from, a job's model, ...), tenant bob with alice's ids gets exactly what a missing id gets
and no byte of alice's data; every protected operation answers 401 without a key and with a
revoked one; an admin reaches both tenants' resources. Then hostile input, sent by a tenant
at its own and at another tenant's resources.

Against the auth-on distributed stack (API and worker processes, Postgres, Redis)."""
from __future__ import annotations

import functools
import io
import os
import pickle
import re
import uuid
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
import torch

from tests.images import crafted_png
from tests.procs import wait_status, wait_until
from tests.tenants import admin_cli, client, make_tenant

pytestmark = pytest.mark.slow

PATH_IDS = {"job_id": "job", "dataset_id": "dataset", "model_id": "model",
            "sweep_id": "sweep"}
# What the other path parameters take: a checkpoint reference.
PATH_VALUES = {"ref": "best"}
PUBLIC = {("GET", "/health"), ("POST", "/session")}


def npz_dataset(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8),
             y_train=np.arange(60) % 3,
             x_test=rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8),
             y_test=np.arange(12) % 3)
    return buf.getvalue()


def png_bytes(seed: int = 0) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), np.uint8)).save(
        out, "PNG")
    return out.getvalue()


@functools.lru_cache(maxsize=None)
def program_archive(seed: int = 0) -> bytes:
    """A lone torch.export program (no mode-dependent op) of tests/programs.py's PlainNet,
    its weights drawn from seed (each tenant's own bytes, its own sha256)."""
    from tests.programs import PlainNet, export

    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.export.save(export(PlainNet(), training=True), buffer)
    return buffer.getvalue()


def tenant_resources(c: httpx.Client, label: str, seed: int, key: str, base: str) -> dict:
    """An uploaded dataset, a succeeded job trained on it and an uploaded program, named with
    a unique marker."""
    marker = f"{label}-{uuid.uuid4().hex}"
    program = c.post("/models", files={"file": ("plain.pt2", program_archive(seed))},
                     data={"name": f"{marker}-model"})
    assert program.status_code == 201, program.text
    ds = c.post("/datasets", files={"file": ("d.npz", npz_dataset(seed))},
                data={"name": f"{marker}-dataset"})
    assert ds.status_code == 202, ds.text
    ready = wait_until(lambda: (d := c.get(f"/datasets/{ds.json()['id']}").json())
                       ["status"] != "processing" and d, timeout=120)
    assert ready["status"] == "ready", ready
    job = c.post("/jobs", json={"name": f"{marker}-job", "model": "mlp",
                                "dataset": ds.json()["id"],
                                "hyperparameters": {"epochs": 2, "batch_size": 8,
                                                    "log_every": 2}})
    assert job.status_code == 201, job.text
    done = wait_status(base, job.json()["id"], key=key, timeout=240)
    assert done["status"] == "succeeded", done
    checkpoints = c.get(f"/jobs/{done['id']}/checkpoints").json()["checkpoints"]
    assert checkpoints
    # A sweep, cancelled at once (its event stream ends; its one trial never runs).
    sweep = c.post("/sweeps", json={"name": f"{marker}-sweep", "base": {
        "model": "mlp", "dataset": ds.json()["id"]}, "space": {
        "hyperparameters.lr": {"grid": [0.01]}}, "strategy": "grid"})
    assert sweep.status_code == 201, sweep.text
    assert c.post(f"/sweeps/{sweep.json()['id']}/cancel").status_code == 202
    return {"job": done["id"], "dataset": ds.json()["id"], "model": program.json()["id"],
            "sweep": sweep.json()["id"], "owner": done["owner"],
            "secrets": [marker, done["owner"], program.json()["sha256"],
                        *(cp["sha256"] for cp in checkpoints)]}


@pytest.fixture(scope="module")
def world(auth_stack):
    base = auth_stack["base"]
    alice = client(base, auth_stack["alice"])
    bob = client(base, auth_stack["bob"])
    admin = client(base, auth_stack["admin"])
    try:
        yield {"base": base, "env": auth_stack, "alice": alice, "bob": bob, "admin": admin,
               "a": tenant_resources(alice, "alice", 1, auth_stack["alice"], base),
               "b": tenant_resources(bob, "bob", 2, auth_stack["bob"], base),
               "schema": admin.get("/openapi.json").json()}
    finally:
        for c in (alice, bob, admin):
            c.close()


# ---- requests built from the schema ----------------------------------------------------------

def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def body_properties(schema: dict, op: dict) -> tuple[str | None, set[str]]:
    """The request body's media type and its top-level property names."""
    content = op.get("requestBody", {}).get("content", {})
    for media, spec in content.items():
        ref = spec["schema"].get("$ref")
        body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else spec["schema"]
        return media, set(body.get("properties", {}))
    return None, set()


def id_variants(schema: dict, method: str, path: str, op: dict) -> list[str]:
    """How an operation takes an id: `path` (a path parameter), `predict` (a form field
    job_id), `init_from`, `dataset` and `model` (fields of a job spec)."""
    params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
    unknown = params - set(PATH_IDS) - set(PATH_VALUES)
    assert not unknown, f"{method} {path}: no value known for path parameters {unknown}"
    variants = ["path"] if params & set(PATH_IDS) else []
    media, props = body_properties(schema, op)
    if "job_id" in props and media == "multipart/form-data":
        variants.append("predict")
    if "init_from" in props:
        variants.append("init_from")
    if "dataset" in props and "model" in props:
        variants += ["dataset", "model"]
    return variants


def send(c: httpx.Client, method: str, path: str, variant: str | None, ids: dict,
         **extra) -> httpx.Response:
    url = path
    for name, kind in PATH_IDS.items():
        if "{" + name + "}" in url:
            url = url.replace("{" + name + "}", ids[kind])
    for name, value in PATH_VALUES.items():
        url = url.replace("{" + name + "}", value)
    kwargs: dict = {}
    if variant == "predict" or (variant is None and path == "/predict"):
        kwargs = {"files": {"image": ("x.png", png_bytes(), "image/png")},
                  "data": {"job_id": ids["job"], "top_k": "1"}}
    elif variant == "init_from":
        kwargs = {"json": {"model": "mlp", "dataset": ids["dataset"],
                           "init_from": {"job_id": ids["job"], "checkpoint": "best"}}}
    elif variant == "dataset":
        kwargs = {"json": {"model": "mlp", "dataset": ids["dataset"]}}
    elif variant == "model":  # the program's classes (5) are not digits' (10): never run
        kwargs = {"json": {"model": ids["model"], "dataset": "digits"}}
    elif method == "POST" and path == "/models":
        kwargs = {"files": {"file": ("plain.pt2", program_archive())}}
    elif method == "POST" and path == "/datasets":
        kwargs = {"files": {"file": ("d.npz", npz_dataset(9))}}
    elif method == "POST" and path == "/jobs":
        kwargs = {"json": {"model": "mlp", "dataset": "digits"}}
    elif method == "POST" and path == "/session":
        kwargs = {"json": {"key": "thk_0000000000000000_" + "x" * 43}}
    kwargs.update(extra)
    return c.request(method, url, **kwargs)


def scrubbed(response: httpx.Response, ids: dict) -> str:
    text = response.text
    for value in ids.values():
        if isinstance(value, str):
            text = text.replace(value, "<id>")
    return text


# ---- the matrix ------------------------------------------------------------------------------

def test_every_id_taking_operation_treats_another_tenants_id_as_a_missing_one(world):
    schema, bob, a = world["schema"], world["bob"], world["a"]
    # bob's own dataset with alice's job (init_from) and alice's dataset with bob's nothing:
    # each variant isolates one foreign id, the rest being valid for bob.
    missing = {"job": uuid.uuid4().hex, "dataset": uuid.uuid4().hex, "model": uuid.uuid4().hex,
               "sweep": uuid.uuid4().hex}
    covered = []
    for method, path, op in operations(schema):
        for variant in id_variants(schema, method, path, op):
            foreign_ids = {"job": a["job"], "dataset": a["dataset"], "model": a["model"],
                           "sweep": a["sweep"]}
            if variant == "init_from":  # the dataset is bob's own; only the job is foreign
                foreign_ids["dataset"] = missing_ids_dataset = world["b"]["dataset"]
                missing_ids = {"job": missing["job"], "dataset": missing_ids_dataset,
                               "model": missing["model"], "sweep": missing["sweep"]}
            else:
                missing_ids = missing
            foreign = send(bob, method, path, variant, foreign_ids)
            absent = send(bob, method, path, variant, missing_ids)
            label = f"{method} {path} ({variant})"
            assert foreign.status_code in (404, 422), (label, foreign.status_code, foreign.text)
            assert foreign.status_code == absent.status_code, label
            assert scrubbed(foreign, foreign_ids) == scrubbed(absent, missing_ids), label
            leaked = [s for s in a["secrets"]
                      if s in foreign.text or s in str(foreign.headers)]
            assert not leaked, (label, leaked)
            covered.append((method, path, variant))
    names = {f"{m} {p} {v}" for m, p, v in covered}
    # The generator found every kind the issue names (it is not vacuously green).
    for expected in ("GET /jobs/{job_id}/events path", "GET /jobs/{job_id}/logs path",
                     "POST /predict predict", "GET /datasets/{dataset_id} path",
                     "DELETE /datasets/{dataset_id} path",
                     "GET /jobs/{job_id}/checkpoints/{ref} path",
                     "GET /jobs/{job_id}/checkpoints path", "POST /jobs init_from",
                     "POST /jobs dataset", "GET /jobs/{job_id}/metrics path",
                     "POST /jobs/{job_id}/cancel path", "DELETE /jobs/{job_id} path",
                     "GET /models/{model_id} path", "DELETE /models/{model_id} path",
                     "POST /jobs model", "GET /sweeps/{sweep_id} path",
                     "GET /sweeps/{sweep_id}/events path", "POST /sweeps/{sweep_id}/cancel path",
                     "DELETE /sweeps/{sweep_id} path"):
        assert expected in names, (expected, sorted(names))
    # bob's deletes and cancels changed nothing of alice's.
    alice = world["alice"]
    assert alice.get(f"/jobs/{a['job']}").json()["status"] == "succeeded"
    assert alice.get(f"/datasets/{a['dataset']}").status_code == 200
    assert alice.get(f"/models/{a['model']}").status_code == 200
    assert alice.get(f"/sweeps/{a['sweep']}").json()["status"] == "cancelled"


def test_lists_show_only_the_callers_own_and_an_admin_everything(world):
    a, b = world["a"], world["b"]
    for c, own, other in ((world["alice"], a, b), (world["bob"], b, a)):
        jobs = {j["id"] for j in c.get("/jobs").json()["jobs"]}
        datasets = {d["id"] for d in c.get("/datasets").json()["datasets"]}
        models = {m["id"] for m in c.get("/models").json()["models"]}
        sweeps = {s["id"] for s in c.get("/sweeps").json()["items"]}
        assert own["sweep"] in sweeps and other["sweep"] not in sweeps
        assert own["job"] in jobs and other["job"] not in jobs
        assert own["dataset"] in datasets and other["dataset"] not in datasets
        assert own["model"] in models and other["model"] not in models
        listing = (c.get("/jobs").text + c.get("/datasets").text + c.get("/models").text
                   + c.get("/sweeps").text)
        assert not [s for s in other["secrets"] if s in listing]
    admin = world["admin"]
    jobs = {j["id"] for j in admin.get("/jobs").json()["jobs"]}
    datasets = {d["id"] for d in admin.get("/datasets").json()["datasets"]}
    models = {m["id"] for m in admin.get("/models").json()["models"]}
    assert {a["job"], b["job"]} <= jobs and {a["dataset"], b["dataset"]} <= datasets
    assert {a["model"], b["model"]} <= models


def test_an_admin_reaches_every_tenants_resources(world):
    schema, admin = world["schema"], world["admin"]
    for owner in (world["a"], world["b"]):
        ids = {"job": owner["job"], "dataset": owner["dataset"], "model": owner["model"],
               "sweep": owner["sweep"]}
        for method, path, op in operations(schema):
            if method != "GET" or "path" not in id_variants(schema, method, path, op):
                continue
            resp = send(admin, method, path, "path", ids)
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
        predicted = send(admin, "POST", "/predict", "predict", ids)
        assert predicted.status_code == 200, predicted.text
        # A finished job cannot be cancelled: a 409 about its state, not a 404.
        assert send(admin, "POST", "/jobs/{job_id}/cancel", "path", ids).status_code == 409
    fine_tune = send(admin, "POST", "/jobs", "init_from", {"job": world["a"]["job"],
                                                            "dataset": world["a"]["dataset"]})
    assert fine_tune.status_code == 201, fine_tune.text
    # init_from by its owner works the same way (so bob's 422 above was about ownership).
    own = send(world["bob"], "POST", "/jobs", "init_from", {"job": world["b"]["job"],
                                                             "dataset": world["b"]["dataset"]})
    assert own.status_code == 201, own.text


def test_every_protected_operation_needs_a_valid_key(world):
    env, schema = world["env"], world["schema"]
    carol = make_tenant(env["env"], f"carol-{uuid.uuid4().hex[:6]}")
    with client(world["base"], carol) as c:
        assert c.get("/jobs").status_code == 200
    admin_cli(env["env"], "revoke-key", carol)
    ids = {"job": world["a"]["job"], "dataset": world["a"]["dataset"],
           "model": world["a"]["model"], "sweep": world["a"]["sweep"]}
    checked = 0
    for key in (None, carol, "thk_" + "0" * 16 + "_" + "A" * 43, "not-a-key"):
        with client(world["base"], key) as c:
            for method, path, op in operations(schema):
                variants = id_variants(schema, method, path, op) or [None]
                resp = send(c, method, path, variants[0], ids)
                if (method, path) in PUBLIC:
                    assert resp.status_code != 401 or path == "/session", path
                    continue
                assert resp.status_code == 401, (key, method, path, resp.status_code)
                assert resp.headers["www-authenticate"].startswith("Bearer")
                assert not [s for s in world["a"]["secrets"] if s in resp.text]
                checked += 1
    protected = [(m, p) for m, p, _ in operations(schema) if (m, p) not in PUBLIC]
    assert len(protected) >= 15 and checked == 4 * len(protected)
    # The schema documents it: a security requirement and a 401 on each protected operation.
    for method, path, op in operations(schema):
        if (method, path) not in PUBLIC:
            assert op.get("security") and "401" in op["responses"], (method, path)


# ---- hostile input, now also from another tenant -----------------------------------------------

def test_hostile_input_from_a_tenant(world, tmp_path):
    bob, a, b = world["bob"], world["a"], world["b"]
    # An oversized JSON body: 413 before any parsing, and no job made.
    before = len(bob.get("/jobs").json()["jobs"])
    big = bob.post("/jobs", content=b'{"model": "' + b"x" * (2 * 1024 * 1024) + b'"}',
                   headers={"content-type": "application/json"})
    assert big.status_code == 413
    assert len(bob.get("/jobs").json()["jobs"]) == before
    # A pixel bomb: refused from its header on bob's own job; alice's job is just missing.
    bomb = {"image": ("bomb.png", crafted_png(20000, 20000), "image/png")}
    assert bob.post("/predict", files=bomb, data={"job_id": b["job"]}).status_code == 413
    foreign = bob.post("/predict", files=bomb, data={"job_id": a["job"]})
    assert foreign.status_code == 404
    # Path-like ids go nowhere, and never reach a file.
    for path in ("/jobs/..%2F..%2Fadmin.key", "/jobs/%2e%2e", "/datasets/..%2F..%2Fadmin.key",
                 f"/jobs/{b['job']}/checkpoints/..%2F..%2F..%2Fadmin.key",
                 f"/jobs/{a['job']}/..%2F{b['job']}/logs"):
        resp = bob.get(path)
        assert resp.status_code in (404, 422), (path, resp.status_code)
        assert "thk_" not in resp.text
    # A checkpoint crafted to run code on unpickling: bob's own job's checkpoint that no one
    # has loaded yet (not `best`, which the API may hold in its model cache) is replaced.
    marker = tmp_path / "pwned"
    listing = bob.get(f"/jobs/{b['job']}/checkpoints").json()
    epoch = next(cp["epoch"] for cp in listing["checkpoints"] if cp["epoch"] != listing["best"])

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch '{marker}'",))

    with psycopg.connect(world["env"]["db_url"]) as conn:
        key = conn.execute("SELECT storage_key FROM checkpoints WHERE job_id = %s AND "
                           "epoch = %s", (b["job"], epoch)).fetchone()[0]
    path = Path(world["env"]["tmp"]) / "data" / "artifacts" / key
    assert path.exists()
    buffer = io.BytesIO()
    torch.save({"model_state": Evil()}, buffer, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    path.write_bytes(buffer.getvalue())
    resp = bob.post("/predict", files={"image": ("x.png", png_bytes(), "image/png")},
                    data={"job_id": b["job"], "checkpoint": str(epoch)})
    assert resp.status_code == 409, resp.text
    init = bob.post("/jobs", json={"model": "mlp", "dataset": b["dataset"],
                                   "init_from": {"job_id": b["job"],
                                                 "checkpoint": str(epoch)}})
    assert init.status_code == 422, init.text
    assert not marker.exists()
    assert re.search(r"cannot|refused|sha256|checksum", resp.text + init.text)
