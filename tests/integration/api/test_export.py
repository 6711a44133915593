"""GET /jobs/{id}/export over real HTTP (uvicorn in this process): a lenet fitted on 8x8
grayscale images exported as a torch.export archive, loaded by a fresh Python with torch
alone, and as an ONNX model run by onnxruntime; each gives /predict's probabilities. The
export is made once per checkpoint and format and goes with the job; errors name what is
wrong (422), a missing or foreign job or checkpoint is a 404, a network that cannot be
exported a 409."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import select

import core.export
from core import auth, jobs
from core.artifacts import checkpoint_key, get_store, job_prefix
from core.config import get_settings
from core.db import session_scope
from core.export_cache import export_key
from core.jobspec import JobSpec
from core.tables import Checkpoint, Job
from tests.integration.api.test_predict_batching import base  # noqa: F401 - a fixture
from tests.unit.api.test_predictor import checkpoint_blobs  # noqa: F401 - a fixture

IMAGES = 5
PRODUCT = ("api", "core", "models", "worker", "cli")
# What a deployment runs: torch alone (numpy only as torch's own bridge for the output).
LOAD_PT2 = textwrap.dedent("""
    import json, sys
    import torch

    extra = {{"trainhub.json": ""}}
    model = torch.export.load(sys.argv[1], extra_files=extra).module()
    images = torch.load(sys.argv[2], weights_only=True)
    with torch.inference_mode():
        probs = model(images)
        one = model(images[:1])
    product = sorted(m for m in sys.modules if m.split(".")[0] in {product})
    print(json.dumps({{"probs": probs.tolist(), "one": one.tolist(), "product": product,
                      "meta": json.loads(extra["trainhub.json"])}}))
""").format(product=PRODUCT)


def add_job(files: list[bytes], name: str, epochs=(1, 2)) -> str:
    """A job (lenet, its classes and shape those of the checkpoints) with checkpoint rows
    for `epochs`, their files in the store; `best` is epoch 1 (the higher eval_accuracy)."""
    with session_scope() as session:
        job_id = jobs.create_job(session, JobSpec(model="lenet", dataset="digits",
                                                  name=name).resolved()).id
    for epoch in epochs:
        key = checkpoint_key(job_id, epoch)
        size, sha = get_store().save(key, lambda f, e=epoch: f.write(files[e - 1]))
        with session_scope() as session:
            session.add(Checkpoint(job_id=job_id, epoch=epoch, step=3 * epoch, storage_key=key,
                                   size_bytes=size, sha256=sha,
                                   metrics={"eval_accuracy": 1.0 / epoch}))
    return job_id


@pytest.fixture(scope="module")
def job(checkpoint_blobs) -> str:  # noqa: F811 - a fixture
    return add_job(checkpoint_blobs[1], "lenet on ünïcode/digits")


@pytest.fixture(scope="module")
def pngs() -> list[bytes]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(IMAGES):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def as_batch(pngs: list[bytes]) -> torch.Tensor:
    """What /predict makes of images at the dataset's size and mode: their pixels, uint8
    (N, 1, 8, 8); decoded here without trainhub, as a deployment would."""
    return torch.from_numpy(np.stack([np.asarray(Image.open(io.BytesIO(p))) for p in pngs])
                            [:, None].copy())


def predict_probs(base: str, job_id: str, pngs: list[bytes],  # noqa: F811
                  checkpoint: str = "best") -> np.ndarray:
    """/predict's probabilities of every class, rows in the images' order, columns by
    class index."""
    resp = httpx.post(f"{base}/predict", data={"job_id": job_id, "checkpoint": checkpoint,
                                                "top_k": "4"},
                      files=[("image", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)],
                      timeout=60)
    assert resp.status_code == 200, resp.text
    out = np.zeros((len(pngs), 4))
    for row, ranked in enumerate(resp.json()["predictions"]):
        for p in ranked:
            out[row, p["index"]] = p["probability"]
    return out


def export(base: str, job_id: str, **params) -> httpx.Response:  # noqa: F811
    return httpx.get(f"{base}/jobs/{job_id}/export", params=params, timeout=300)


def test_the_pt2_archive_reproduces_predict_in_a_python_with_torch_alone(
        base, job, pngs, tmp_path):  # noqa: F811
    resp = export(base, job)  # best (epoch 1), pt2
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-disposition"] == (
        'attachment; filename="lenet-on-n-code-digits-epoch1.pt2"')
    assert resp.headers["x-checkpoint-epoch"] == "1"
    assert int(resp.headers["content-length"]) == len(resp.content)
    (tmp_path / "model.pt2").write_bytes(resp.content)
    batch = as_batch(pngs)
    torch.save(batch, tmp_path / "images.pt")
    done = subprocess.run([sys.executable, "-I", "-c", LOAD_PT2, "model.pt2", "images.pt"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["product"] == []
    assert out["meta"] == {"input": {"dtype": "uint8", "shape": ["N", 1, 8, 8]},
                           "classes": ["ant", "bee", "cat", "dog"]}
    got, expected = np.array(out["probs"]), predict_probs(base, job, pngs)
    assert got.shape == (IMAGES, 4)
    print(f"pt2 vs /predict: max abs diff {np.abs(got - expected).max():.3g}")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["one"], got[:1], rtol=0, atol=1e-6)  # any batch size


def test_the_onnx_model_agrees_with_predict_in_onnxruntime(base, job, pngs):  # noqa: F811
    import onnxruntime

    resp = export(base, job, checkpoint="2", format="onnx")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-disposition"].endswith('-epoch2.onnx"')
    session = onnxruntime.InferenceSession(resp.content, providers=["CPUExecutionProvider"])
    (given,), (out,) = session.get_inputs(), session.get_outputs()
    assert (given.name, given.type, given.shape[1:]) == ("images", "tensor(uint8)", [1, 8, 8])
    assert out.name == "probabilities"
    assert json.loads(session.get_modelmeta().custom_metadata_map["trainhub"])["classes"] == [
        "ant", "bee", "cat", "dog"]
    got = session.run(None, {"images": as_batch(pngs).numpy()})[0]
    expected = predict_probs(base, job, pngs, checkpoint="2")
    print(f"onnx vs /predict: max abs diff {np.abs(got - expected).max():.3g}")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_an_export_is_made_once_kept_under_the_job_and_deleted_with_it(
        base, checkpoint_blobs, monkeypatch):  # noqa: F811
    job_id = add_job(checkpoint_blobs[1], "cached", epochs=(2,))
    made = []
    real = core.export.EXPORTERS["pt2"]
    monkeypatch.setitem(core.export.EXPORTERS, "pt2",
                        lambda *args: made.append(args) or real(*args))
    first, second = export(base, job_id), export(base, job_id, checkpoint="latest")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content and len(made) == 1
    assert first.headers["x-export-sha256"] == second.headers["x-export-sha256"]
    with session_scope() as session:
        sha = session.scalars(select(Checkpoint.sha256).where(Checkpoint.job_id == job_id)).one()
        session.get(Job, job_id).status = "succeeded"
    key = export_key(job_id, sha, "pt2")
    assert key.startswith(job_prefix(job_id) + "/") and get_store().exists(key)
    assert httpx.delete(f"{base}/jobs/{job_id}", timeout=60).status_code == 204
    assert not get_store().exists(key)


def test_bad_values_are_422s_naming_the_field(base, job):  # noqa: F811
    resp = export(base, job, format="zip")
    assert resp.status_code == 422
    (problem,) = resp.json()["detail"]
    assert problem["field"] == "format" and "'pt2' or 'onnx'" in problem["msg"]
    resp = export(base, job, checkpoint="newest")
    assert resp.status_code == 422
    (problem,) = resp.json()["detail"]
    assert problem == {"field": "checkpoint", "type": "value_error",
                       "msg": "expected best, latest or an epoch number",
                       "loc": ["query", "checkpoint"]}


def test_a_missing_checkpoint_or_job_is_a_404(base, job, checkpoint_blobs):  # noqa: F811
    resp = export(base, job, checkpoint="7")
    assert resp.status_code == 404 and "no checkpoint '7'" in resp.json()["detail"]
    bare = add_job(checkpoint_blobs[1], "no checkpoint", epochs=())
    resp = export(base, bare)
    assert resp.status_code == 404 and "no checkpoint yet" in resp.json()["detail"]
    assert export(base, "0" * 32).status_code == 404


def test_another_tenants_job_is_a_404_as_a_missing_one(base, job, monkeypatch):  # noqa: F811
    with session_scope() as session:
        user = auth.create_user(session, "export-tenant")
        _row, key = auth.create_key(session, user)
    monkeypatch.setenv("TRAINHUB_AUTH", "on")
    get_settings.cache_clear()
    try:
        headers = {"Authorization": f"Bearer {key}"}
        foreign = httpx.get(f"{base}/jobs/{job}/export", headers=headers, timeout=60)
        missing = httpx.get(f"{base}/jobs/{'0' * 32}/export", headers=headers, timeout=60)
        assert httpx.get(f"{base}/jobs/{job}/export", timeout=60).status_code == 401
    finally:
        monkeypatch.setenv("TRAINHUB_AUTH", "off")
        get_settings.cache_clear()
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["detail"].replace(job, "<id>") == \
        missing.json()["detail"].replace("0" * 32, "<id>")


def test_a_network_that_cannot_be_exported_is_a_409_that_says_why(
        base, checkpoint_blobs, monkeypatch):  # noqa: F811
    job_id = add_job(checkpoint_blobs[1], "unexportable", epochs=(1,))

    def refuse(*_args, **_kwargs):
        raise RuntimeError("data-dependent control flow\nand more lines")

    monkeypatch.setattr(torch.export, "export", refuse)
    resp = export(base, job_id)
    assert resp.status_code == 409, resp.text
    assert resp.json()["detail"] == (
        f"job {job_id}'s model (lenet) cannot be exported: the network cannot be exported "
        "as pt2: RuntimeError: data-dependent control flow")
