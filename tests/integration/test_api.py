"""The API over real HTTP (uvicorn subprocess, real Postgres and Redis broker), no worker:
every validation error, ids, paging, cancel of a queued job, catalog, health."""
from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import create_database
from tests.procs import env_with, start_api

VALID = {"model": "lenet", "dataset": "digits"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    # A queue no worker consumes: jobs stay queued, which is what these tests need.
    env = env_with(TRAINHUB_DATABASE_URL=create_database("trainhub_api"),
                   TRAINHUB_DATA_DIR=str(tmp / "data"),
                   TRAINHUB_QUEUE=f"idle-{uuid.uuid4().hex[:8]}")
    proc, base = start_api(env, tmp)
    with httpx.Client(base_url=base, timeout=10) as client:
        yield client
    proc.stop()


def submit(api, body) -> httpx.Response:
    return api.post("/jobs", json=body)


def test_minimal_job_gets_the_tutorial_defaults(api):
    resp = submit(api, VALID)
    assert resp.status_code == 201
    job = resp.json()
    assert resp.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and job["name"] == "lenet-digits"
    assert job["spec"]["hyperparameters"] == {
        "epochs": 2, "batch_size": 4, "optimizer": "sgd", "lr": 0.001, "momentum": 0.9,
        "nesterov": False, "weight_decay": 0.0, "loss": "cross_entropy", "scheduler": "none",
        "seed": 0, "log_every": 2000, "validation_fraction": 0.0, "world_size": 1,
        "compile": False, "amp": "off", "channels_last": False, "augment": None,
        "image_size": None, "freeze": "none"}
    assert job["spec"]["device"] == "auto"
    assert job["progress"] == {"epoch": 0, "step": 0, "total_steps": 2 * 360}
    assert api.get(f"/jobs/{job['id']}").json()["id"] == job["id"]


BAD_FIELDS = [
    ({"model": "vgg99"}, "model", "lenet"),
    ({"dataset": "imagenet"}, "dataset", "cifar10"),
    ({"device": "tpu"}, "device", "'cuda'"),
    ({"hyperparameters": {"epochs": 0}}, "hyperparameters.epochs", "1"),
    ({"hyperparameters": {"epochs": 1001}}, "hyperparameters.epochs", "1000"),
    ({"hyperparameters": {"batch_size": 0}}, "hyperparameters.batch_size", "1"),
    ({"hyperparameters": {"batch_size": 65537}}, "hyperparameters.batch_size", "65536"),
    ({"hyperparameters": {"lr": 0}}, "hyperparameters.lr", "0"),
    ({"hyperparameters": {"lr": 11}}, "hyperparameters.lr", "10"),
    ({"hyperparameters": {"momentum": 1}}, "hyperparameters.momentum", "1"),
    ({"hyperparameters": {"momentum": -0.1}}, "hyperparameters.momentum", "0"),
    ({"hyperparameters": {"weight_decay": 2}}, "hyperparameters.weight_decay", "1"),
    ({"hyperparameters": {"log_every": 0}}, "hyperparameters.log_every", "1"),
    ({"hyperparameters": {"validation_fraction": 0.6}}, "hyperparameters.validation_fraction", "0.5"),
    ({"hyperparameters": {"optimizer": "rmsprop"}}, "hyperparameters.optimizer", "'adamw'"),
    ({"hyperparameters": {"loss": "hinge"}}, "hyperparameters.loss", "'mse'"),
    ({"hyperparameters": {"scheduler": "plateau"}}, "hyperparameters.scheduler", "'onecycle'"),
    ({"hyperparameters": {"seed": -1}}, "hyperparameters.seed", "0"),
    ({"hyperparameters": {"world_size": 0}}, "hyperparameters.world_size", "1"),
    ({"hyperparameters": {"world_size": 9}}, "hyperparameters.world_size", "8"),
    ({"hyperparameters": {"batch_size": 30, "world_size": 4}}, "hyperparameters.world_size",
     "allowed: 1, 2, 3, 5, 6"),
    ({"hyperparameters": {"epochs": "many"}}, "hyperparameters.epochs", "integer"),
    ({"hyperparameters": {"optimizer": "adam", "nesterov": True}}, "hyperparameters", "nesterov"),
    ({"hyperparameters": {"momentum": 0, "nesterov": True}}, "hyperparameters", "momentum > 0"),
    ({"hyperparameters": {"dropout": 0.5}}, "hyperparameters.dropout", "unknown field"),
    ({"gpus": 2}, "gpus", "unknown field"),
    ({"name": "x" * 201}, "name", "200"),
]


@pytest.mark.parametrize("change,field,allowed", BAD_FIELDS,
                         ids=[f"{f}={list(c.values())[0]}" for c, f, _ in BAD_FIELDS])
def test_bad_field_is_422_naming_field_and_allowed(api, change, field, allowed):
    body = {**VALID, **change}
    resp = submit(api, body)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    errors = [d for d in detail if d["field"] == field]
    assert errors, detail
    assert allowed in errors[0]["msg"], errors[0]["msg"]


@pytest.mark.parametrize("body,field", [({"dataset": "digits"}, "model"),
                                        ({"model": "lenet"}, "dataset")])
def test_missing_required_field(api, body, field):
    resp = submit(api, body)
    assert resp.status_code == 422
    assert any(d["field"] == field and "required" in d["msg"].lower()
               for d in resp.json()["detail"])


@pytest.mark.parametrize("content", [b"{not json", b"[]", b""])
def test_body_that_is_not_a_json_object(api, content):
    resp = api.post("/jobs", content=content, headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["detail"]


@pytest.mark.parametrize("path", ["/jobs/{}", "/jobs/{}/metrics", "/jobs/{}/cancel"])
@pytest.mark.parametrize("job_id", [uuid.uuid4().hex, "not-an-id", "..%2F..%2Fetc"])
def test_unknown_or_malformed_id_is_404(api, path, job_id):
    url = path.format(job_id)
    resp = api.post(url) if url.endswith("cancel") else api.get(url)
    assert resp.status_code == 404
    assert "not found" in resp.json()["detail"].lower()


def test_metrics_query_validation(api):
    job_id = submit(api, VALID).json()["id"]
    resp = api.get(f"/jobs/{job_id}/metrics", params={"name": "accuracy"})
    assert resp.status_code == 422 and "'eval_accuracy'" in resp.json()["detail"][0]["msg"]
    assert resp.json()["detail"][0]["field"] == "name"
    for params, field in (({"limit": 0}, "limit"), ({"limit": 10001}, "limit"),
                          ({"since_step": -1}, "since_step"), ({"since_step": "x"}, "since_step"),
                          ({"since_step": 10**20}, "since_step")):
        resp = api.get(f"/jobs/{job_id}/metrics", params=params)
        assert resp.status_code == 422 and resp.json()["detail"][0]["field"] == field
    empty = api.get(f"/jobs/{job_id}/metrics").json()
    assert empty == {"job_id": job_id, "metrics": [], "next_since_step": None}


def test_cancel_queued_job_then_409(api):
    job_id = submit(api, VALID).json()["id"]
    resp = api.post(f"/jobs/{job_id}/cancel")
    assert resp.status_code == 202
    assert resp.json()["status"] == "cancelled" and resp.json()["finished_at"]
    again = api.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


def test_list_jobs_newest_first_with_cursor_and_status_filter(api):
    ids = [submit(api, {**VALID, "name": f"page-{i}"}).json()["id"] for i in range(5)]
    api.post(f"/jobs/{ids[0]}/cancel")
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    mine = [i for i in seen if i in ids]
    assert mine == list(reversed(ids))
    assert len(seen) == len(set(seen))
    cancelled = api.get("/jobs", params={"status": "cancelled", "limit": 500}).json()["jobs"]
    assert ids[0] in [j["id"] for j in cancelled]
    assert all(j["status"] == "cancelled" for j in cancelled)
    bad = api.get("/jobs", params={"status": "done"})
    assert bad.status_code == 422 and "'succeeded'" in bad.json()["detail"][0]["msg"]
    assert api.get("/jobs", params={"cursor": "%%%"}).status_code == 422
    assert api.get("/jobs", params={"limit": 501}).status_code == 422


def test_catalog_lists_models_and_datasets(api):
    models = {m["name"]: m for m in api.get("/models").json()["models"]}
    assert {"lenet", "cnn", "mlp", "resnet18"} < set(models)  # and torchvision's zoo:
    assert len(models) >= 64  # tests/integration/api/test_models_catalog.py
    assert models["lenet"]["default_hyperparameters"]["log_every"] == 2000
    datasets = {d["name"]: d for d in api.get("/datasets").json()["datasets"]}
    assert datasets["digits"]["shape"] == [1, 8, 8]
    assert datasets["digits"]["counts"] == {"train": 1437, "test": 360}
    assert datasets["cifar10"]["classes"][3] == "cat"
    # Downloads are off in the tests and nothing is under the dataset root.
    assert datasets["cifar10"]["status"] == "missing"
    assert datasets["cifar10"]["location"].endswith("cifar-10-batches-py")


def test_health_and_openapi(api):
    assert api.get("/health").json() == {"status": "ok", "database": "ok", "broker": "ok",
                                         "events": "ok"}
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/cancel", "/jobs/{job_id}/metrics",
            "/models", "/datasets", "/health"} <= set(paths)
