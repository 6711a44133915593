"""POST /predict over real HTTP (uvicorn in this process) with concurrent clients: requests
for one model share forward passes, and each answer equals the sequential one; a bad image
fails only its own request."""
from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from api.main import app
from api.predictor import Predictor
from api.routes.predict import get_predictor
from core import jobs
from core.artifacts import checkpoint_key, get_store
from core.db import session_scope
from core.jobspec import JobSpec
from core.tables import Checkpoint
from tests.procs import free_port
from tests.unit.api.test_predictor import checkpoint_blobs  # noqa: F401 - a fixture

CLIENTS, PER_CLIENT = 12, 4


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained_job(checkpoint_blobs) -> str:
    """A job with one real checkpoint (a lenet fitted on 8x8 images, its second epoch)."""
    _dataset, files = checkpoint_blobs
    with session_scope() as session:
        job_id = jobs.create_job(session, JobSpec(model="lenet", dataset="digits").resolved()).id
    key = checkpoint_key(job_id, 2)
    size, sha = get_store().save(key, lambda f: f.write(files[1]))
    with session_scope() as session:
        session.add(Checkpoint(job_id=job_id, epoch=2, step=6, storage_key=key,
                               size_bytes=size, sha256=sha, metrics={}))
    return job_id


@pytest.fixture(scope="module")
def base():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def post(client: httpx.Client, job_id: str, images: list[bytes], top_k: int) -> httpx.Response:
    return client.post("/predict", data={"job_id": job_id, "checkpoint": "latest",
                                         "top_k": str(top_k)},
                       files=[("image", (f"{i}.png", data, "image/png"))
                              for i, data in enumerate(images)])


def test_concurrent_clients_get_what_sequential_requests_get(base, trained_job, monkeypatch):
    rng = np.random.default_rng(0)
    pngs = [png(rng.integers(0, 256, (8, 8), dtype=np.uint8))
            for _ in range(CLIENTS * PER_CLIENT)]
    top_ks = [1 + i % 4 for i in range(len(pngs))]
    with httpx.Client(base_url=base, timeout=60) as client:
        sequential = []
        for data, k in zip(pngs, top_ks):
            resp = post(client, trained_job, [data], k)
            assert resp.status_code == 200, resp.text
            sequential.append(resp.json())
    # This job's model (other modules' jobs may be cached beside it).
    batcher = next(m.batcher for (key, _sha), m in get_predictor()._cache.items()
                   if key == checkpoint_key(trained_job, 2))
    passes_before, requests_before = batcher.passes, batcher.requests

    # Each forward pass takes a little longer, so that concurrent requests surely queue
    # behind one (what a busy server sees); the answers must not change.
    real = Predictor.probabilities

    def slow(loaded, batch):
        time.sleep(0.02)
        return real(loaded, batch)

    monkeypatch.setattr(Predictor, "probabilities", staticmethod(slow))

    def one_client(c: int) -> list[tuple[int, dict]]:
        out = []
        with httpx.Client(base_url=base, timeout=60) as client:
            for j in range(PER_CLIENT):
                i = c * PER_CLIENT + j
                resp = post(client, trained_job, [pngs[i]], top_ks[i])
                assert resp.status_code == 200, resp.text
                out.append((i, resp.json()))
                if j == 1:  # a bad image among the good ones: its own 4xx only
                    bad = post(client, trained_job, [b"not an image"], 1)
                    assert bad.status_code in (415, 422), bad.text
        return out

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [a for part in pool.map(one_client, range(CLIENTS)) for a in part]
    assert len(answers) == len(pngs)
    for i, body in answers:
        expected = sequential[i]
        assert body["job_id"] == expected["job_id"] and body["checkpoint"] == expected["checkpoint"]
        (got,), (want,) = body["predictions"], expected["predictions"]
        assert len(got) == top_ks[i]
        assert [p["index"] for p in got] == [p["index"] for p in want]
        assert [p["label"] for p in got] == [p["label"] for p in want]
        assert [p["probability"] for p in got] == pytest.approx(
            [p["probability"] for p in want], abs=1e-5)
    requests = batcher.requests - requests_before
    passes = batcher.passes - passes_before
    assert requests == len(pngs)  # bad images never reach the batcher
    assert passes < requests, (passes, requests, batcher.batch_sizes)


def test_a_multi_image_request_alongside_single_ones(base, trained_job):
    rng = np.random.default_rng(1)
    pngs = [png(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(10)]
    with httpx.Client(base_url=base, timeout=60) as client:
        alone = [post(client, trained_job, [p], 3).json()["predictions"][0] for p in pngs]

        def many():
            return post(client, trained_job, pngs, 3)

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(many)] + [pool.submit(post, client, trained_job, [p], 3)
                                             for p in pngs[:3]]
            many_resp, *singles = [f.result() for f in futures]
    assert many_resp.status_code == 200
    got = many_resp.json()["predictions"]
    assert [[p["index"] for p in r] for r in got] == [[p["index"] for p in r] for r in alone]
    for resp, want in zip(singles, alone):
        assert resp.status_code == 200
        assert [p["index"] for p in resp.json()["predictions"][0]] == [p["index"] for p in want]
