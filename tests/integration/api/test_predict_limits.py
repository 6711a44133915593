"""POST /predict's per-request pixel budget over real HTTP (uvicorn in this process, so that
the budget can be set low and decoding watched): every image's header is read first, a
request over TRAINHUB_PREDICT_MAX_REQUEST_PIXELS is a 413 that names the field and the
setting, and not one of its images is decoded."""
from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

import api.predictor
from api.routes import predict as route
from core.config import get_settings
from tests.integration.api.test_predict_batching import base, trained_job  # noqa: F401
from tests.unit.api.test_predictor import checkpoint_blobs  # noqa: F401 - a fixture

BUDGET = 3 * 10 * 10  # three 10x10 images


def png(size: int, seed: int = 0) -> bytes:
    out = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def budget(monkeypatch):
    settings = get_settings().model_copy(update={"predict_max_request_pixels": BUDGET,
                                                 "predict_max_pixels": 200})
    monkeypatch.setattr(route, "get_settings", lambda: settings)
    decoded: list[str] = []
    real = api.predictor.load_image

    def counted(image, name="image"):
        decoded.append(name)
        return real(image, name)

    monkeypatch.setattr(api.predictor, "load_image", counted)
    return decoded


def post(base: str, job_id: str, images: list[bytes]) -> httpx.Response:
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return httpx.post(f"{base}/predict", data={"job_id": job_id, "checkpoint": "latest",
                                               "top_k": "1"}, files=files, timeout=60)


def test_a_request_within_its_pixel_budget_is_answered(base, trained_job, budget):
    resp = post(base, trained_job, [png(10, seed) for seed in range(3)])
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["predictions"]) == 3
    assert budget == [f"image {i} ({i - 1}.png)" for i in (1, 2, 3)]


def test_a_request_over_its_pixel_budget_is_413_before_any_image_is_decoded(base, trained_job,
                                                                            budget):
    resp = post(base, trained_job, [png(10, seed) for seed in range(3)] + [png(1)])
    assert resp.status_code == 413, resp.text
    assert resp.json()["detail"] == (
        f"image: 301 pixels in 4 images; a request may hold at most {BUDGET} pixels in all "
        "(TRAINHUB_PREDICT_MAX_REQUEST_PIXELS)")
    assert budget == []
    # An image over the per-image limit (200 here) still says so, naming that image.
    resp = post(base, trained_job, [png(10), png(15)])
    assert resp.status_code == 413, resp.text
    assert resp.json()["detail"].startswith("image 2 (1.png) is 15x15 = 225 pixels")
    assert budget == []
