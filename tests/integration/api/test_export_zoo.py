"""A torchvision model's export (GET /jobs/{id}/export over real HTTP, uvicorn in this
process): torchvision's resnet18 (its ImageNet stem) fitted in process (worker.loop.fit) on
16x16 RGB images at image_size 32x24, so each batch is resized on the device; the .pt2 (in a
fresh Python, torch alone) and the ONNX model (onnxruntime) take the 16x16 images and give
/predict's probabilities: the resize is folded in as /predict applies it.

Not mobilenet_v3_small: at these sizes it gives every image the same probabilities (its
classifier's N(0, 0.01) initialisation leaves the softmax uniform to float32's precision,
and an epoch on random data does not change that), which any export would match."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import httpx
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image

import models
from core import jobs
from core.artifacts import checkpoint_key, get_store
from core.db import session_scope
from core.jobspec import Hyperparameters, JobSpec
from core.tables import Checkpoint
from tests.integration.api.test_export import LOAD_PT2
from tests.integration.api.test_predict_batching import base  # noqa: F401 - a fixture
from tests.unit.factories import one_torch_thread, synthetic_dataset
from worker.checkpointing import build_blob
from worker.control import RunControl
from worker.loop import fit

MODEL, SHAPE, CLASSES = "torchvision.resnet18", (3, 16, 16), 3


@pytest.fixture(scope="module")
def fitted():
    """(the dataset, a job whose one checkpoint is the model after 1 epoch on 8 images)."""
    dataset = synthetic_dataset(8, 4, SHAPE, CLASSES, class_prefix="z")
    spec = JobSpec(model=MODEL, dataset="fake", device="cpu", name="zoo export",
                   hyperparameters={"epochs": 1, "batch_size": 4, "optimizer": "sgd",
                                    "lr": 0.001, "image_size": [32, 24]}).resolved()
    with one_torch_thread():
        torch.manual_seed(0)
        model = models.build(MODEL, SHAPE, CLASSES)
        result = fit(model, dataset, Hyperparameters(**spec["hyperparameters"]),
                     torch.device("cpu"), RunControl())
    assert model.image_size == (32, 24)
    blob = build_blob(model, result.state.state_dict(), 1, result.step, {}, spec, dataset)
    buf = io.BytesIO()
    torch.save(blob, buf)
    with session_scope() as session:
        job_id = jobs.create_job(session, spec).id
    key = checkpoint_key(job_id, 1)
    size, sha = get_store().save(key, lambda f: f.write(buf.getvalue()))
    with session_scope() as session:
        session.add(Checkpoint(job_id=job_id, epoch=1, step=result.step, storage_key=key,
                               size_bytes=size, sha256=sha, metrics={}))
    return dataset, job_id


def predicted(base: str, job_id: str, pngs: list[bytes]) -> np.ndarray:  # noqa: F811
    resp = httpx.post(f"{base}/predict", data={"job_id": job_id, "top_k": str(CLASSES)},
                      files=[("image", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)],
                      timeout=120)
    assert resp.status_code == 200, resp.text
    out = np.zeros((len(pngs), CLASSES))
    for row, ranked in enumerate(resp.json()["predictions"]):
        for p in ranked:
            out[row, p["index"]] = p["probability"]
    return out


def test_a_torchvision_model_exports_with_its_resize_folded_in(
        base, fitted, tmp_path):  # noqa: F811
    dataset, zoo_job = fitted
    test_images = dataset.test.images  # uint8 (4, 3, 16, 16)
    pngs = []
    for image in test_images:
        buf = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy(), mode="RGB").save(buf, "PNG")
        pngs.append(buf.getvalue())
    expected = predicted(base, zoo_job, pngs)
    assert expected.std(axis=0).max() > 1e-3  # the images get probabilities of their own

    pt2 = httpx.get(f"{base}/jobs/{zoo_job}/export", timeout=600)
    assert pt2.status_code == 200, pt2.text
    assert pt2.headers["content-disposition"] == 'attachment; filename="zoo-export-epoch1.pt2"'
    (tmp_path / "model.pt2").write_bytes(pt2.content)
    torch.save(test_images.clone(), tmp_path / "images.pt")
    done = subprocess.run([sys.executable, "-I", "-c", LOAD_PT2, "model.pt2", "images.pt"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["product"] == [] and out["meta"]["input"]["shape"] == ["N", 3, 16, 16]
    got = np.array(out["probs"])
    print(f"zoo pt2 vs /predict: max abs diff {np.abs(got - expected).max():.3g}")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)

    exported = httpx.get(f"{base}/jobs/{zoo_job}/export", params={"format": "onnx"},
                         timeout=600)
    assert exported.status_code == 200, exported.text
    session = onnxruntime.InferenceSession(exported.content,
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": test_images.numpy()})[0]
    print(f"zoo onnx vs /predict: max abs diff {np.abs(got - expected).max():.3g}")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # The resize (to 32x24, from the 16x16 the model is given) is inside the graph.
    graph = onnx.load_from_string(exported.content).graph
    assert "Resize" in {node.op_type for node in graph.node}
